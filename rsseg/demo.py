"""The end-to-end demo on the bundled sample tiles: train -> predict -> evaluate.

Trains a UNetFormer from scratch on ``sample_tiles/{train,val}`` (24 + 8 real OpenAerialMap chips
with OSM building labels), predicts the held-out Tanzania crop to a COG + GeoPackage, evaluates it
against its mask, and prints where everything is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rsseg.config import bundled_config, training_config
from rsseg.errors import RsSegError


@dataclass
class DemoResult:
    checkpoint: Path
    classes_tif: Path
    polygons: Path
    area_report: Path
    eval_dir: Path
    report_markdown: str
    #: a data directory for `rsseg app` that holds both the sample raster and the checkpoint
    viewer_dir: Path
    sample_raster: Path
    checkpoint_rel: Path


def find_sample_tiles(path: str | Path | None = None) -> Path:
    """The sample_tiles folder: ``path``, else ./sample_tiles, else the one in the source checkout."""
    candidates = [Path(path)] if path else [Path("sample_tiles"), Path(str(bundled_config("folder"))).parents[2] / "sample_tiles"]
    for c in candidates:
        if (c / "train" / "images").is_dir() and (c / "tanzania" / "image.tif").is_file():
            return c
    raise RsSegError(
        f"sample tiles not found (looked in {', '.join(map(str, candidates))}); expected "
        "<dir>/train/{images,masks}, <dir>/val/{images,masks} and <dir>/tanzania/{image,mask}.tif"
    )


def run_demo(
    out_dir: str | Path,
    *,
    sample_dir: str | Path | None = None,
    epochs: int = 12,
    regularizers: list[str] | None = None,
    crop_size: int = 256,
    progress: bool = True,
) -> DemoResult:
    from rsseg.checkpoint import load_model
    from rsseg.evaluation import build_report, evaluate_rasters, report_markdown, write_report
    from rsseg.inference import Predictor, predict_file
    from rsseg.training import train

    samples = find_sample_tiles(sample_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = training_config(
        dataset="folder",
        root=str(samples),
        regularizers=regularizers or ["in2nect"],
        overrides=[f"optim.max_epochs={epochs}", f"optim.crop_size={crop_size}", "optim.lr=1e-3", "optim.backbone_lr_factor=1.0"],
    )
    result = train(cfg, out / "run", progress=progress)
    ckpt = result.best or result.last
    if ckpt is None:
        raise RsSegError("training produced no checkpoint")

    model, meta = load_model(ckpt)
    predictor = Predictor(model, meta, tile=512, overlap=128, batch=4, device="auto")
    image, mask = samples / "tanzania" / "image.tif", samples / "tanzania" / "mask.tif"
    classes_tif, polygons, areas = out / "tanzania_classes.tif", out / "tanzania_buildings.gpkg", out / "tanzania_areas.json"
    predict_file(
        predictor, image, classes_tif, vector_path=polygons, report_path=areas, overwrite=True, progress=progress
    )
    conf = evaluate_rasters(classes_tif, mask, num_classes=meta.num_classes, ignore_index=meta.ignore_index)
    report = build_report(
        conf, meta.classes, train_freq=meta.class_pixel_freq,
        extra={"prediction": str(classes_tif), "reference": str(mask), "checkpoint": str(ckpt)},
    )
    eval_dir = out / "evaluation"
    write_report(report, eval_dir)
    viewer_dir = Path(os.path.commonpath([image.resolve(), ckpt.resolve()]))
    return DemoResult(
        ckpt, classes_tif, polygons, areas, eval_dir, report_markdown(report),
        viewer_dir, image.resolve().relative_to(viewer_dir), ckpt.resolve().relative_to(viewer_dir),
    )
