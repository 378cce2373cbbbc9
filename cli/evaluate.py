"""rsseg evaluate."""

from __future__ import annotations

from pathlib import Path

import click

from rsseg.cli.params import ENGINE_HELP
from rsseg.config import ENGINES, TTA_MODES


@click.command(context_settings={"show_default": True})
@click.argument("rasters", nargs=-1, type=click.Path(dir_okay=False))
@click.option("-m", "--model", "checkpoint", type=click.Path(dir_okay=False), help="Evaluate this checkpoint (or exported .onnx model) on a dataset split.")
@click.option("--root", type=click.Path(file_okay=False), help="Dataset root (default: the one the checkpoint was trained on).")
@click.option("--split", default="val", help="Dataset split to evaluate (val or test where the dataset has labels).")
@click.option("--tta", type=click.Choice(TTA_MODES), help="Test-time augmentation (default: from the checkpoint's config).")
@click.option("--tile", type=int, help="Sliding-window tile size (default: from the checkpoint's config).")
@click.option("--overlap", type=int, help="Sliding-window overlap.")
@click.option("--window-batch", "batch", type=int, help="Windows per forward pass (default: from the checkpoint's config).")
@click.option("--device", default="auto", type=click.Choice(["auto", "cpu", "cuda"]), help="Where the model runs (train's --devices is a count instead).")
@click.option("--engine", default="auto", type=click.Choice(ENGINES), envvar="RSSEG_ENGINE",
              help=f"{ENGINE_HELP} With -m only.")
@click.option("--classes", help="Comma-separated class names for raster mode (default: from the prediction's metadata).")
@click.option("--exclude", help="Comma-separated classes left out of mIoU/mF1 (OA keeps them). Default: clutter for ISPRS.")
@click.option("--eroded/--no-eroded", default=None, help="ISPRS: evaluate on the eroded (noBoundary) labels.")
@click.option("--attribute", metavar="FIELD", help="Vector REF: the field holding each feature's class, a class name or id (default: class_name when present).")
@click.option("--class", "label_class", metavar="NAME", help="Vector REF: every feature is this class (a layer of building footprints without a class field).")
@click.option("--background", metavar="NAME", help="Vector REF: the class of pixels no feature covers, or 'ignore' to score only covered pixels (default: the class named background).")
@click.option("--layer", metavar="NAME", help="Vector REF: the layer to read (default: its only layer with geometries).")
@click.option("--object-classes", help="Classes also scored per object against REF (precision, recall, F1 of objects matched at IoU >= 0.5), by name or id, or 'none' (default: the classes named building).")
@click.option("-o", "--out", "out_dir", default="report", type=click.Path(file_okay=False), help="Directory for report.json/.md, per_class.csv, confusion.png.")
@click.option("--overwrite", is_flag=True, help="Replace report files already in the -o directory.")
def command(rasters, checkpoint, root, split, tta, tile, overlap, batch, device, engine, classes, exclude, eroded, attribute,
            label_class, background, layer, object_classes, out_dir, overwrite):
    """Per-class IoU, F1, precision, recall, OA, mIoU and mF1; per-object scores of building classes.

    \b
    Two modes:
      rsseg evaluate PRED.tif REF.tif -o report/        a class raster against a reference on its grid
      rsseg evaluate PRED.tif buildings.gpkg --attribute class_name -o report/
                                                        ... or against polygons rasterised on its grid
      rsseg evaluate -m best.ckpt --split val -o report/ a checkpoint on a dataset split
    """
    from dataclasses import asdict

    from rsseg.checkpoint import is_onnx_model
    from rsseg.cli.progress import progress_bar
    from rsseg.errors import ConfigError, OutputExistsError
    from rsseg.evaluation import (
        REPORT_FILES,
        check_report_dir,
        evaluate_checkpoint,
        evaluate_prediction,
        write_evaluation,
    )
    from rsseg.inference.references import VectorOptions
    from rsseg.inference.report import provenance
    from rsseg.inference.settings import PredictSettings, onnx_model_settings

    if checkpoint and rasters:
        raise ConfigError("give either PRED.tif REF.tif or --model, not both")
    vector = VectorOptions(attribute, label_class, background, layer)
    reference_only = vector.flags() + (["--object-classes"] if object_classes is not None else [])
    if checkpoint and reference_only:
        raise ConfigError(f"{', '.join(reference_only)} apply to evaluate PRED REF (a reference file), not to --model")
    check_report_dir(out_dir)  # before any work, not after scoring a whole split
    existing = [name for name in REPORT_FILES if (Path(out_dir) / name).exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"{out_dir} already holds {', '.join(existing)}; pass --overwrite to replace them")
    excluded = [c for c in exclude.split(",") if c] if exclude is not None else None
    if checkpoint:
        with progress_bar(f"evaluating {split}", "tiles", transient=True) as on_progress:
            settings = PredictSettings(tile=tile, overlap=overlap, batch=batch, tta=tta, device=device, engine=engine)
            if is_onnx_model(checkpoint):  # ONNX Runtime runs it: --engine torch or --device cuda is refused now
                settings = onnx_model_settings(checkpoint, settings)
            conf, meta, collapse = evaluate_checkpoint(checkpoint, root=root, split=split, settings=settings,
                                                       eroded_labels=eroded, on_progress=on_progress)
        from rsseg.checkpoint import ModelMeta

        # the settings the run used: the one resolution (checkpoint config, CPU/GPU rule, these flags)
        used = {**asdict(settings.resolve(ModelMeta.from_dict(meta))), "split": split, "eroded": eroded,
                "exclude": excluded}
        origin = provenance([root or meta["config"]["dataset"].get("root")], used, checkpoint)
        result = write_evaluation(conf, meta["classes"], out_dir, exclude=excluded,
                                  dataset=meta["config"]["dataset"]["name"], train_freq=meta.get("class_pixel_freq"),
                                  extra={"checkpoint": str(checkpoint), "split": split, "tta": tta, "collapse": collapse,
                                         "provenance": origin})
    elif len(rasters) == 2:
        result = evaluate_prediction(rasters[0], rasters[1], out_dir, class_names=classes.split(",") if classes else None,
                                     exclude=excluded, vector=vector, object_classes=object_classes)
    else:
        raise ConfigError("give two rasters (PRED.tif REF.tif) or --model CKPT; see rsseg evaluate --help")
    click.echo(result.markdown)
    if checkpoint and collapse:
        click.echo("collapse of the classifier input: " + ", ".join(
            f"{k} {collapse[k]:.3f}" for k in ("nc1", "delta_inter", "delta_intra", "nc3") if k in collapse))
    elif checkpoint:
        click.echo("collapse of the classifier input: not measured (an exported .onnx model outputs logits only; "
                   "evaluate its checkpoint for it)")
    click.echo(f"report written to {result.paths['report.json'].parent}/ (report.json, report.md, per_class.csv, confusion.png)")
