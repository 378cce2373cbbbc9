"""rsseg evaluate."""

from __future__ import annotations

import click


@click.command(context_settings={"show_default": True})
@click.argument("rasters", nargs=-1, type=click.Path(dir_okay=False))
@click.option("-m", "--checkpoint", type=click.Path(dir_okay=False), help="Evaluate this checkpoint on a dataset split.")
@click.option("--root", type=click.Path(file_okay=False), help="Dataset root (default: the one the checkpoint was trained on).")
@click.option("--split", default="val", help="Dataset split to evaluate (val or test where the dataset has labels).")
@click.option("--tta", type=click.Choice(["none", "flip", "d4", "ms"]), help="Test-time augmentation (default: from the checkpoint's config).")
@click.option("--tile", type=int, help="Sliding-window tile size (default: from the checkpoint's config).")
@click.option("--overlap", type=int, help="Sliding-window overlap.")
@click.option("--device", default="auto", help="auto, cpu or cuda.")
@click.option("--classes", help="Comma-separated class names for raster mode (default: from the prediction's metadata).")
@click.option("--exclude", help="Comma-separated classes left out of mIoU/mF1 (OA keeps them). Default: clutter for ISPRS.")
@click.option("--eroded/--no-eroded", default=None, help="ISPRS: evaluate on the eroded (noBoundary) labels.")
@click.option("-o", "--out", "out_dir", default="report", type=click.Path(file_okay=False), help="Directory for report.json/.md, per_class.csv, confusion.png.")
def command(rasters, checkpoint, root, split, tta, tile, overlap, device, classes, exclude, eroded, out_dir):
    """Per-class IoU, F1, precision, recall, OA, mIoU and mF1.

    \b
    Two modes:
      rsseg evaluate PRED.tif REF.tif -o report/        two aligned class rasters
      rsseg evaluate -m best.ckpt --split val -o report/ a checkpoint on a dataset split
    """
    from rsseg.errors import RsSegError
    from rsseg.evaluation import build_report, class_names_from_raster, evaluate_checkpoint, evaluate_rasters, report_markdown, write_report
    from rsseg.metrics import default_exclusions

    if checkpoint and rasters:
        raise RsSegError("give either PRED.tif REF.tif or --checkpoint, not both")
    if checkpoint:
        conf, meta = evaluate_checkpoint(checkpoint, root=root, split=split, tta=tta, tile=tile, overlap=overlap, device=device, eroded_labels=eroded)
        names, freq = meta["classes"], meta.get("class_pixel_freq")
        dataset = meta["config"]["dataset"]["name"]
        extra = {"checkpoint": str(checkpoint), "split": split, "tta": tta}
    elif len(rasters) == 2:
        names = classes.split(",") if classes else class_names_from_raster(rasters[0])
        if not names:
            raise RsSegError(f"{rasters[0]} carries no class names; pass --classes name0,name1,...")
        conf = evaluate_rasters(rasters[0], rasters[1], num_classes=len(names))
        freq, dataset = None, None
        extra = {"prediction": str(rasters[0]), "reference": str(rasters[1])}
    else:
        raise RsSegError("give two rasters (PRED.tif REF.tif) or --checkpoint CKPT; see rsseg evaluate --help")
    if exclude is not None:
        unknown = [c for c in exclude.split(",") if c and c not in names]
        if unknown:
            raise RsSegError(f"--exclude names unknown classes {unknown}; classes are {names}")
        excluded = [names.index(c) for c in exclude.split(",") if c]
    else:
        excluded = default_exclusions(dataset, names)
    report = build_report(conf, names, exclude=excluded, train_freq=freq, extra=extra)
    paths = write_report(report, out_dir)
    click.echo(report_markdown(report))
    click.echo(f"report written to {paths['report.json'].parent}/ (report.json, report.md, per_class.csv, confusion.png)")
