"""rsseg predict."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import click

from rsseg.config import ENGINES, TTA_MODES


def _bands(value: str | None) -> list[int] | None:
    if not value:
        return None
    try:
        return [int(b) for b in value.split(",")]
    except ValueError:
        raise click.BadParameter("use 1-based band numbers separated by commas, e.g. 3,2,1") from None


def _derive(template: str | None, src: str, multiple: bool) -> Path | None:
    """With several inputs, an output like out.tif becomes out_<input stem>.tif (a URL's file name)."""
    from rsseg.io import source_stem

    if template is None:
        return None
    path = Path(template)
    return path.with_name(f"{path.stem}_{source_stem(src)}{path.suffix}") if multiple else path


@contextlib.contextmanager
def _show_warnings() -> Iterator[None]:
    """Library warnings (input unlike the training data, no CRS...) as one yellow line each."""
    with warnings.catch_warnings():
        warnings.simplefilter("default", UserWarning)
        warnings.showwarning = lambda message, *_args, **_kw: click.secho(f"warning: {message}", fg="yellow", err=True)
        yield


@click.command(context_settings={"show_default": True})
@click.argument("inputs", nargs=-1, required=True)
@click.option("-m", "--model", "checkpoint", required=True, type=click.Path(dir_okay=False), help="Checkpoint written by rsseg train.")
@click.option("-o", "--out", "output", required=True, type=click.Path(dir_okay=False), help="Class raster (Cloud-Optimized GeoTIFF). With several inputs, the input name is appended.")
@click.option("--vector", type=click.Path(dir_okay=False), help="Polygons per class: .gpkg, .shp or .geojson.")
@click.option("--report", type=click.Path(dir_okay=False), help="Per-class area (and IoU with --reference) as JSON.")
@click.option("--confidence", type=click.Path(dir_okay=False), help="Confidence raster (COG): the probability of the predicted class per pixel, stored as uint8 0-255 with scale 1/255 so GIS tools read 0-1; 0 = nodata.")
@click.option("--reference", type=click.Path(dir_okay=False), help="Reference mask on the same grid: adds per-class IoU/F1 to the report.")
@click.option("--tile", type=int, help="Window size in pixels (default: from the checkpoint's config).")
@click.option("--overlap", type=int, help="Overlap between windows in pixels.")
@click.option("--window-batch", "batch", type=int, help="Windows per forward pass (not train's --batch-size, chips per training step).")
@click.option("--tta", type=click.Choice(TTA_MODES), help="Test-time augmentation (default: from the checkpoint's config).")
@click.option("--bands", help="1-based input bands in the model's band order, e.g. 3,2,1 (default: the first N).")
@click.option("--simplify", default=0.0, help="Polygon simplification tolerance in metres.")
@click.option("--min-area", type=float, help="Drop polygons smaller than this many square metres (default: 4 pixels; 0 keeps all).")
@click.option("--vector-classes", help="Classes to polygonise, by name or id, e.g. building,road (default: every class but the background: a class named 'background', else the dataset's excluded class such as ISPRS clutter, else class 0).")
@click.option("--strict", is_flag=True, help="Refuse inputs unlike the model's training data (pixel size more than 2x off the checkpoint's, band names) instead of warning.")
@click.option("--asset", help="Asset of a STAC item input to read (default: 'visual', else its only raster asset).")
@click.option("--device", default="auto", type=click.Choice(["auto", "cpu", "cuda"]), help="Where the model runs (train's --devices is a count instead).")
@click.option("--engine", default="auto", type=click.Choice(ENGINES), envvar="RSSEG_ENGINE",
              help="torch, onnx (ONNX Runtime on the CPU; the model is exported once and cached beside the checkpoint) "
                   "or auto (onnx on the CPU when onnxruntime is installed, else torch). Env: RSSEG_ENGINE.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
def command(inputs, checkpoint, output, vector, report, confidence, reference, tile, overlap, batch, tta, bands, simplify, min_area, vector_classes, strict, asset, device, engine, overwrite):
    """Segment rasters of any size with sliding windows at constant memory.

    Writes a uint8 class raster with the input's CRS, transform and nodata, a colour palette and
    overviews (COG), with a GDAL attribute table (.aux.xml) and a QGIS style (.qml) naming the
    classes; optionally polygons (GeoJSON in WGS 84 per RFC 7946), a confidence raster and a
    per-class area report.

    INPUTS are raster files, URLs (https:// COGs are read by range requests, only the windows
    needed; s3:// and gs:// through GDAL) or STAC items (a .json file or URL; see --asset).

    \b
    Example:
      rsseg predict scene.tif -m best.ckpt -o classes.tif --vector buildings.gpkg --report areas.json
    """
    import time

    from rsseg.cli.predict_summary import print_summary
    from rsseg.cli.progress import progress_bar
    from rsseg.errors import RsSegError
    from rsseg.inference import Predictor, predict_file
    from rsseg.inference.vectorize import vector_driver
    from rsseg.io import check_output, source_stem

    started = time.perf_counter()
    multiple = len(inputs) > 1
    if multiple and reference:
        raise RsSegError("--reference applies to a single input; run predict once per raster to compare each")
    plans = [
        (src, {name: _derive(t, src, multiple) for name, t in
               (("output_path", output), ("vector_path", vector), ("report_path", report), ("confidence_path", confidence))})
        for src in inputs
    ]
    for _, targets in plans:  # refuse before any work (loading the model), not after the first of several inputs
        for target in targets.values():
            if target is not None:
                check_output(target, overwrite)
        if targets["vector_path"] is not None:
            vector_driver(targets["vector_path"])
    predictor = Predictor.from_checkpoint(
        checkpoint, device=device, engine=engine, tile=tile, overlap=overlap, batch=batch, tta=tta,
        on_export=lambda path: click.echo(f"exporting the model to ONNX once, for the onnx engine (a minute or two): {path}",
                                          err=True))
    meta = predictor.meta
    click.echo(f"model: {Path(checkpoint).name} ({meta.num_classes} classes: {', '.join(meta.classes)}); "
               f"{predictor.settings}")
    results = []
    for src, targets in plans:
        with _show_warnings(), progress_bar(source_stem(src), "windows") as on_progress:
            result = predict_file(
                predictor, src, targets.pop("output_path"), **targets, reference_path=reference,
                bands=_bands(bands), simplify=simplify, min_area=min_area, vector_classes=vector_classes, strict=strict,
                asset=asset, overwrite=overwrite, on_progress=on_progress,
            )
        results.append(result)
        written = [result.output_path, result.vector_path, result.confidence_path, result.report_path]
        click.echo(f"{src} -> " + ", ".join(str(p) for p in written if p is not None))
        if "metrics" in result.report:
            m = result.report["metrics"]
            click.echo("against the reference: " + ", ".join(
                f"{k} {100 * m[k]:.2f}" if m[k] is not None else f"{k} n/a" for k in ("OA", "mIoU", "mF1")))
    print_summary(results, time.perf_counter() - started)
