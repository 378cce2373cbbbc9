"""rsseg evaluate."""

from __future__ import annotations

from pathlib import Path

import click

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
              help="torch, onnx (ONNX Runtime on the CPU; the model is exported once and cached beside the checkpoint) "
                   "or auto (onnx on the CPU when onnxruntime is installed, else torch). With -m only. Env: RSSEG_ENGINE.")
@click.option("--classes", help="Comma-separated class names for raster mode (default: from the prediction's metadata).")
@click.option("--exclude", help="Comma-separated classes left out of mIoU/mF1 (OA keeps them). Default: clutter for ISPRS.")
@click.option("--eroded/--no-eroded", default=None, help="ISPRS: evaluate on the eroded (noBoundary) labels.")
@click.option("-o", "--out", "out_dir", default="report", type=click.Path(file_okay=False), help="Directory for report.json/.md, per_class.csv, confusion.png.")
@click.option("--overwrite", is_flag=True, help="Replace report files already in the -o directory.")
def command(rasters, checkpoint, root, split, tta, tile, overlap, batch, device, engine, classes, exclude, eroded, out_dir, overwrite):
    """Per-class IoU, F1, precision, recall, OA, mIoU and mF1.

    \b
    Two modes:
      rsseg evaluate PRED.tif REF.tif -o report/        two aligned class rasters
      rsseg evaluate -m best.ckpt --split val -o report/ a checkpoint on a dataset split
    """
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
    from rsseg.inference.settings import PredictSettings, onnx_model_settings

    if checkpoint and rasters:
        raise ConfigError("give either PRED.tif REF.tif or --model, not both")
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
        result = write_evaluation(conf, meta["classes"], out_dir, exclude=excluded,
                                  dataset=meta["config"]["dataset"]["name"], train_freq=meta.get("class_pixel_freq"),
                                  extra={"checkpoint": str(checkpoint), "split": split, "tta": tta, "collapse": collapse})
    elif len(rasters) == 2:
        result = evaluate_prediction(rasters[0], rasters[1], out_dir, class_names=classes.split(",") if classes else None,
                                     exclude=excluded)
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
