"""rsseg predict."""

from __future__ import annotations

from pathlib import Path

import click

from rsseg.config import TTA_MODES


def _bands(value: str | None) -> list[int] | None:
    if not value:
        return None
    try:
        return [int(b) for b in value.split(",")]
    except ValueError:
        raise click.BadParameter("use 1-based band numbers separated by commas, e.g. 3,2,1") from None


def _derive(template: str | None, src: Path, multiple: bool) -> Path | None:
    """With several inputs, an output like out.tif becomes out_<input stem>.tif."""
    if template is None:
        return None
    path = Path(template)
    return path.with_name(f"{path.stem}_{src.stem}{path.suffix}") if multiple else path


@click.command(context_settings={"show_default": True})
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-m", "--model", "checkpoint", required=True, type=click.Path(dir_okay=False), help="Checkpoint written by rsseg train.")
@click.option("-o", "--out", "output", required=True, type=click.Path(dir_okay=False), help="Class raster (Cloud-Optimized GeoTIFF). With several inputs, the input name is appended.")
@click.option("--vector", type=click.Path(dir_okay=False), help="Polygons per class: .gpkg, .shp or .geojson.")
@click.option("--report", type=click.Path(dir_okay=False), help="Per-class area (and IoU with --reference) as JSON.")
@click.option("--confidence", type=click.Path(dir_okay=False), help="Confidence raster: max probability x 255 (uint8).")
@click.option("--reference", type=click.Path(dir_okay=False), help="Reference mask on the same grid: adds per-class IoU/F1 to the report.")
@click.option("--tile", type=int, help="Window size in pixels (default: from the checkpoint's config).")
@click.option("--overlap", type=int, help="Overlap between windows in pixels.")
@click.option("--batch", type=int, help="Windows per forward pass.")
@click.option("--tta", type=click.Choice(TTA_MODES), help="Test-time augmentation (default: from the checkpoint's config).")
@click.option("--bands", help="1-based input bands in the model's band order, e.g. 3,2,1 (default: the first N).")
@click.option("--simplify", default=0.0, help="Polygon simplification tolerance in metres.")
@click.option("--min-area", default=0.0, help="Drop polygons smaller than this many square metres.")
@click.option("--device", default="auto", type=click.Choice(["auto", "cpu", "cuda"]), help="Where the model runs.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--dask", "dask_spec", metavar="local[:N]|tcp://HOST:PORT", help="Run on Dask distributed: a local cluster of N worker processes, or an existing scheduler (workers must see the inputs, outputs and checkpoint).")
def command(inputs, checkpoint, output, vector, report, confidence, reference, tile, overlap, batch, tta, bands, simplify, min_area, device, overwrite, dask_spec):
    """Segment rasters of any size with sliding windows at constant memory.

    Writes a uint8 class raster with the input's CRS, transform and nodata, a colour palette and
    overviews (COG); optionally polygons, a confidence raster and a per-class area report.

    \b
    Example:
      rsseg predict scene.tif -m best.ckpt -o classes.tif --vector buildings.gpkg --report areas.json
    """
    from rsseg.cli.progress import progress_bar
    from rsseg.errors import RsSegError
    from rsseg.inference import Predictor, predict_file
    from rsseg.inference.vectorize import vector_driver
    from rsseg.io import check_output

    multiple = len(inputs) > 1
    if multiple and reference:
        raise RsSegError("--reference applies to a single input; run predict once per raster to compare each")
    plans = [
        (src, {name: _derive(t, src, multiple) for name, t in
               (("output_path", output), ("vector_path", vector), ("report_path", report), ("confidence_path", confidence))})
        for src in map(Path, inputs)
    ]
    for _, targets in plans:  # refuse before any work (loading the model), not after the first of several inputs
        for target in targets.values():
            if target is not None:
                check_output(target, overwrite)
        if targets["vector_path"] is not None:
            vector_driver(targets["vector_path"])
    if dask_spec:
        try:
            from rsseg.inference.distributed import parse_dask
        except ImportError:
            raise RsSegError("--dask needs Dask distributed; install it with pip install 'dask[distributed]' "
                             "(or the rsseg extra: pip install -e '.[dask]')") from None
        parse_dask(dask_spec)  # a malformed address fails before the model loads
    # with --dask the model runs on the workers; the client's copy gives metadata and tile/overlap
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu" if dask_spec else device, tile=tile,
                                          overlap=overlap, batch=batch, tta=tta)
    meta = predictor.meta
    click.echo(f"model: {Path(checkpoint).name} ({meta.num_classes} classes: {', '.join(meta.classes)}); "
               f"{predictor.settings if not dask_spec else f'tile {predictor.tile}/{predictor.overlap}, tta {predictor.tta}, on Dask {dask_spec}'}")
    options = dict(reference_path=reference, bands=_bands(bands), simplify=simplify, min_area=min_area, overwrite=overwrite)
    if dask_spec:
        _predict_dask(dask_spec, predictor, checkpoint, plans, options, device, batch)
        return
    for src, targets in plans:
        with progress_bar(src.name, "windows") as on_progress:
            result = predict_file(predictor, src, targets.pop("output_path"), **targets, **options, on_progress=on_progress)
        _summary(src, result)


def _predict_dask(spec, predictor, checkpoint, plans, options, device, batch) -> None:
    """--dask: one task per scene when there are at least as many scenes as workers, else strips."""
    from rsseg.cli.progress import progress_bar
    from rsseg.inference.distributed import dask_client, predict_file_dask, predict_scenes_dask, use_scenes

    with dask_client(spec) as client:
        if use_scenes(client, len(plans)):
            with progress_bar(f"{len(plans)} rasters", "scenes") as on_progress:
                results = predict_scenes_dask(client, predictor, checkpoint, plans, device=device, batch=batch,
                                              on_progress=on_progress, **options)
            for (src, _), result in zip(plans, results):
                _summary(src, result)
            return
        for src, targets in plans:
            with progress_bar(src.name, "strips") as on_progress:
                result = predict_file_dask(client, predictor, checkpoint, src, targets.pop("output_path"), **targets,
                                           **options, device=device, batch=batch, on_progress=on_progress)
            _summary(src, result)


def _summary(src: Path, result) -> None:
    """What one input produced, and its scores against the reference."""
    written = [result.output_path, result.vector_path, result.confidence_path, result.report_path]
    click.echo(f"{src} -> " + ", ".join(str(p) for p in written if p is not None))
    if "metrics" in result.report:
        m = result.report["metrics"]
        click.echo("against the reference: " + ", ".join(
            f"{k} {100 * m[k]:.2f}" if m[k] is not None else f"{k} n/a" for k in ("OA", "mIoU", "mF1")))
