"""rsseg predict."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import click

from rsseg.cli.params import ENGINE_HELP, FiniteFloat, SizeWithUnit
from rsseg.config import ENGINES, TTA_MODES

#: the largest --buffer-mb (1 TiB): a larger budget is a typo, and one near 1e308 overflows
MAX_BUFFER_MB = 2.0**20


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
@click.option("-m", "--model", "checkpoint", required=True, type=click.Path(dir_okay=False), help="Checkpoint written by rsseg train, or a .onnx model written by rsseg export (runs in ONNX Runtime, no PyTorch needed).")
@click.option("-o", "--out", "output", required=True, type=click.Path(dir_okay=False), help="Class raster (Cloud-Optimized GeoTIFF). With several inputs, the input name is appended.")
@click.option("--vector", type=click.Path(dir_okay=False), help="Polygons per class: .gpkg, .shp or .geojson.")
@click.option("--report", type=click.Path(dir_okay=False), help="Per-class area (and IoU with --reference) as JSON.")
@click.option("--confidence", type=click.Path(dir_okay=False), help="Confidence raster (COG): the probability of the predicted class per pixel, stored as uint8 0-255 with scale 1/255 so GIS tools read 0-1; 0 = nodata.")
@click.option("--reference", type=click.Path(dir_okay=False), help="Reference on the same grid: a class mask, or polygons (.gpkg, .geojson, .shp, .fgb) rasterised on it. Adds per-class IoU/F1 and per-object scores to the report.")
@click.option("--attribute", metavar="FIELD", help="Vector --reference: the field holding each feature's class, a class name or id (default: class_name when present).")
@click.option("--class", "label_class", metavar="NAME", help="Vector --reference: every feature is this class (a layer of building footprints without a class field).")
@click.option("--background", metavar="NAME", help="Vector --reference: the class of pixels no feature covers, or 'ignore' to score only covered pixels (default: the class named background).")
@click.option("--layer", metavar="NAME", help="Vector --reference: the layer to read (default: its only layer with geometries).")
@click.option("--object-classes", help="Classes scored per object against --reference (precision, recall, F1 of objects matched at IoU >= 0.5), by name or id, or 'none' (default: the classes named building).")
@click.option("--tile", type=int, help="Window size in pixels (default: from the checkpoint's config).")
@click.option("--overlap", type=int, help="Overlap between windows in pixels.")
@click.option("--window-batch", "batch", type=int, help="Windows per forward pass (not train's --batch-size, chips per training step).")
@click.option("--tta", type=click.Choice(TTA_MODES), help="Test-time augmentation (default: from the checkpoint's config).")
@click.option("--bands", help="1-based input bands in the model's band order, e.g. 3,2,1 (default: the first N).")
@click.option("--scale", help="Multiply the input by this factor to reach the model's training value range "
              "(e.g. 255 for 0-1 floats, 1/257 for 16-bit copies of 8-bit scenes), or 'auto' to stretch each band's "
              "p1-p99 onto the training p1-p99. Without it, an input in another range is refused.")
@click.option("--simplify", type=SizeWithUnit("length"), metavar="LENGTH",
              help="Outline simplification tolerance: pixels (1px) or metres (0.5m; a bare number is metres). "
                   "Neighbouring polygons keep their shared edges exactly; 0 keeps the pixel outlines. [default: 1px]")
@click.option("--min-area", type=SizeWithUnit("area"), metavar="AREA",
              help="Drop polygons smaller than this: square metres (2m2; a bare number is m2) or pixels (8px); "
                   "0 keeps all. [default: 2m2, and never under 4 pixels]")
@click.option("--regularize", metavar="CLASSES",
              help="Give the polygons of these classes (building footprints; names or ids, e.g. building) "
                   "right-angled outlines: edges snapped to each building's main direction, its perpendicular or "
                   "45 degrees. Needs the regularize extra: pip install 'rsseg[regularize]'.")
@click.option("--vector-classes", help="Classes to polygonise, by name or id, e.g. building,road (default: every class but the background: a class named 'background', else the dataset's excluded class such as ISPRS clutter, else class 0).")
@click.option("--strict", is_flag=True, help="Refuse inputs unlike the model's training data (pixel size more than 2x off the checkpoint's, band names) instead of warning.")
@click.option("--asset", help="Asset of a STAC item input to read (default: 'visual', else its only raster asset), or several separated by commas, stacked in that order: asset keys, eo:bands common names or band names, e.g. red,green,blue or B04,B03,B02 (one grid: Sentinel-2's 10 m bands).")
@click.option("--allow-local-assets", is_flag=True, help="Let a STAC item's asset name a file on this machine (an absolute path, file:// or /vsizip/...); without it only relative hrefs and http(s), s3 and gs URLs are read.")
@click.option("--device", default="auto", type=click.Choice(["auto", "cpu", "cuda"]), help="Where the model runs (train's --devices is a count instead).")
@click.option("--engine", default="auto", type=click.Choice(ENGINES), envvar="RSSEG_ENGINE",
              help=ENGINE_HELP)
@click.option("--buffer-mb", type=FiniteFloat(min=0, min_open=True, max=MAX_BUFFER_MB, example="512"), metavar="MB",
              help="Memory for the buffers that grow with raster width (blending, input cache). A wider raster "
                   "is processed in column strips, recomputing the windows on each strip border (a few percent "
                   "more work). [default: 512, whole rows up to ~28k RGB columns at 7 classes]")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--dask", "dask_spec", metavar="local[:N]|tcp://HOST:PORT", help="Run on Dask distributed: a local cluster of N worker processes, or an existing scheduler (workers must see the inputs, outputs and checkpoint).")
def command(inputs, checkpoint, output, vector, report, confidence, reference, attribute, label_class, background, layer,
            object_classes, tile, overlap, batch, tta, bands, scale, simplify, min_area, regularize, vector_classes, strict,
            asset, allow_local_assets, device, engine, buffer_mb, overwrite, dask_spec):
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
      rsseg predict scene.tif -m model.onnx -o classes.tif     # a model file from rsseg export
    """
    import time
    from dataclasses import replace

    from rsseg.checkpoint import is_onnx_model, read_meta
    from rsseg.cli.predict_summary import print_summary
    from rsseg.errors import ConfigError
    from rsseg.inference import Predictor
    from rsseg.inference.contract import require_contract
    from rsseg.inference.pipeline import PredictOptions, check_jobs
    from rsseg.inference.predictor import onnx_export_cached
    from rsseg.inference.settings import PredictSettings, check_settings, onnx_model_settings

    started = time.perf_counter()
    multiple = len(inputs) > 1
    if multiple and reference:
        raise ConfigError("--reference applies to a single input; run predict once per raster to compare each")
    scoring = {"--attribute": attribute, "--class": label_class, "--background": background, "--layer": layer,
               "--object-classes": object_classes}
    if not reference and any(v is not None for v in scoring.values()):
        raise ConfigError(f"{', '.join(k for k, v in scoring.items() if v is not None)} describe the --reference "
                          "to score against; add --reference REF or drop them")
    polygon_options = {"--simplify": simplify, "--min-area": min_area, "--vector-classes": vector_classes,
                       "--regularize": regularize}
    if vector is None and (given := [k for k, v in polygon_options.items() if v is not None]):
        one = len(given) == 1
        raise ConfigError(f"{', '.join(given)} {'shapes' if one else 'shape'} polygons, and none are written; add "
                          f"--vector FILE.gpkg or drop {'it' if one else 'them'}")
    if regularize is not None:
        from rsseg.inference.vectorize import require_regularizer

        require_regularizer()
    jobs = [
        (src, {name: _derive(t, src, multiple) for name, t in
               (("output_path", output), ("vector_path", vector), ("report_path", report), ("confidence_path", confidence))})
        for src in inputs
    ]
    # everything is checked before any work (loading the model), not after the first of several inputs
    check_jobs(jobs, overwrite)
    settings = PredictSettings(tile=tile, overlap=overlap, batch=batch, tta=tta, device=device, engine=engine)
    if is_onnx_model(checkpoint):  # ONNX Runtime runs it: --engine torch or --device cuda is refused now
        settings = onnx_model_settings(checkpoint, settings)
    options = PredictOptions(reference_path=reference, bands=_bands(bands), simplify=simplify, min_area=min_area,
                             vector_classes=vector_classes, regularize=regularize, strict=strict, asset=asset,
                             allow_local_assets=allow_local_assets, scale=scale, model_path=checkpoint,
                             overwrite=overwrite, reference_attribute=attribute, reference_class=label_class,
                             reference_background=background, reference_layer=layer, object_classes=object_classes,
                             **({} if buffer_mb is None else {"buffer_mb": buffer_mb}))
    if dask_spec:
        results = _predict_dask(dask_spec, checkpoint, settings, jobs, options)
    else:
        # an exported .onnx model, or a checkpoint's cached export, loads in a second and carries the
        # metadata, so reading it from the checkpoint is skipped; otherwise inputs are checked first
        cached = onnx_export_cached(checkpoint, settings)
        predictor = Predictor.from_onnx(cached, settings) if cached is not None else None
        meta = predictor.meta if predictor is not None else read_meta(checkpoint)
        require_contract(meta, checkpoint)
        if predictor is None:  # a built predictor has checked its own (resolved) settings
            check_settings(replace(settings, engine="torch").resolve(meta))
        _check_inputs(jobs, meta, options)
        if predictor is None:
            predictor = Predictor.from_checkpoint(checkpoint, settings, on_export=lambda path: click.echo(
                f"exporting the model to ONNX once, for the onnx engine (a minute or two): {path}", err=True))
        _echo_model(checkpoint, predictor.meta, predictor.settings.summary())
        results = _predict_local(predictor, jobs, options)
    print_summary(results, time.perf_counter() - started)


def _check_inputs(jobs, meta, options) -> None:
    """Everything about the inputs and the reference that can be checked before the model loads."""
    from rsseg.inference.contract import check_inputs
    from rsseg.inference.scoring import object_class_ids

    check_inputs([src for src, _ in jobs], meta, bands=options.bands, scale=options.scale,
                 reference=options.reference_path, asset=options.asset,
                 allow_local_assets=options.allow_local_assets, vector=options.vector_reference())
    if options.reference_path is not None:
        object_class_ids(options.object_classes, meta.classes)


def _echo_model(checkpoint: str, meta, settings: str) -> None:
    click.echo(f"model: {Path(checkpoint).name} ({meta.num_classes} classes: {', '.join(meta.classes)}); {settings}")


def _predict_local(predictor, jobs, options) -> list:
    """Each input in turn, in this process."""
    from rsseg.cli.progress import progress_bar
    from rsseg.inference.pipeline import PredictOutputs, predict_outputs
    from rsseg.io import sigterm_as_interrupt, source_stem

    results = []
    for src, targets in jobs:
        with _show_warnings(), progress_bar(source_stem(src), "windows") as on_progress, sigterm_as_interrupt():
            result = predict_outputs(predictor, src, PredictOutputs(**targets), options, on_progress)
        _summary(src, result)
        results.append(result)
    return results


def _predict_dask(spec, checkpoint, settings, jobs, options) -> list:
    """--dask: one task per scene when there are at least as many scenes as workers, else row
    strips. The client plans from the checkpoint's metadata (no torch, no model); workers load it."""
    from dataclasses import asdict

    from rsseg.cli.progress import progress_bar
    from rsseg.errors import BackendUnavailableError
    from rsseg.inference.contract import require_contract
    from rsseg.io import sigterm_as_interrupt, source_stem

    try:
        from rsseg.inference.distributed import (
            RemoteModel,
            dask_client,
            parse_dask,
            predict_file_dask,
            predict_scenes_dask,
            use_scenes,
        )
    except ImportError:
        raise BackendUnavailableError("--dask needs Dask distributed; install it with pip install 'dask[distributed]' "
                                      "(or the rsseg extra: pip install 'rsseg[dask]')") from None
    parse_dask(spec)  # a malformed address fails before any work
    model = RemoteModel.plan(checkpoint, settings)
    require_contract(model.meta, checkpoint)
    _check_inputs(jobs, model.meta, options)
    s = model.settings
    _echo_model(checkpoint, model.meta, f"tile {s.tile}/{s.overlap}, tta {s.tta}, on Dask {spec}")
    kwargs = asdict(options)
    verbose = bool((click.get_current_context().find_root().obj or {}).get("verbose"))  # -v: Dask's logs too
    if not verbose:  # the scheduler runs in this process: its shutdown chatter and tracebacks stay quiet too
        logging.getLogger("distributed").setLevel(logging.CRITICAL)
    with dask_client(spec, quiet=not verbose) as client, sigterm_as_interrupt():
        if use_scenes(client, len(jobs)):
            with progress_bar(f"{len(jobs)} rasters", "scenes") as on_progress:
                results = predict_scenes_dask(client, model, jobs, on_progress=on_progress, **kwargs)
        else:
            results = []
            for src, targets in jobs:
                targets = dict(targets)
                with _show_warnings(), progress_bar(source_stem(src), "strips") as on_progress:
                    results.append(predict_file_dask(client, model, src, targets.pop("output_path"), **targets,
                                                     **kwargs, on_progress=on_progress))
    for (src, _), result in zip(jobs, results):
        _summary(src, result)
    return results


def _summary(src: str, result) -> None:
    """What one input produced, and its scores against the reference."""
    from rsseg.evaluation import object_lines

    written = [result.output_path, result.vector_path, result.confidence_path, result.report_path]
    click.echo(f"{src} -> " + ", ".join(str(p) for p in written if p is not None))
    if "metrics" in result.report:
        m = result.report["metrics"]
        click.echo("against the reference: " + ", ".join(
            f"{k} {100 * m[k]:.2f}" if m[k] is not None else f"{k} n/a" for k in ("OA", "mIoU", "mF1")))
        for line in object_lines(m):
            click.echo(line)
