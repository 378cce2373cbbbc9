"""The end-to-end demo on the bundled sample tiles: train -> predict -> evaluate.

Trains a UNetFormer from scratch on ``sample_tiles/{train,val}`` (24 + 8 real OpenAerialMap chips
with OSM building labels), predicts the held-out Tanzania crop to a COG + GeoPackage, evaluates it
against its mask, and prints where everything is. The crop and its mask are copied beside the
outputs, so the output folder alone is a data directory for ``rsseg app``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rsseg.errors import CheckpointNotFoundError, DatasetNotFoundError, OutputExistsError
from rsseg.runconfig import training_config

if TYPE_CHECKING:
    from rsseg.progress import ProgressFn


#: what the demo writes into its output folder: the run directory, the products of the Tanzania crop,
#: its evaluation and the copies of the crop and its mask for the viewer
DEMO_OUTPUTS = ("run", "tanzania_classes.tif", "tanzania_buildings.gpkg", "tanzania_areas.json", "evaluation",
                "tanzania_image.tif", "tanzania_mask.tif")


@dataclass
class DemoResult:
    checkpoint: Path
    classes_tif: Path
    polygons: Path
    area_report: Path
    eval_dir: Path
    report_markdown: str
    #: a data directory for `rsseg app` (the output folder) that holds the sample raster, its
    #: reference mask and the checkpoint; the last three are relative to it
    viewer_dir: Path
    sample_raster: Path
    checkpoint_rel: Path
    reference_rel: Path


def sample_tiles_candidates() -> list[Path]:
    """Where the bundled sample tiles may be, in order: ./sample_tiles, the copy inside an
    installed package (``rsseg/sample_tiles``, shipped as package data), the source checkout's."""
    package = Path(__file__).resolve().parent
    return [Path("sample_tiles"), package / "sample_tiles", package.parent / "sample_tiles"]


def find_sample_tiles(path: str | Path | None = None) -> Path:
    """The sample_tiles folder: ``path``, else the first of :func:`sample_tiles_candidates` that
    holds the demo's files."""
    candidates = [Path(path)] if path else sample_tiles_candidates()
    for c in candidates:
        if (c / "train" / "images").is_dir() and (c / "tanzania" / "image.tif").is_file():
            return c
    raise DatasetNotFoundError(
        f"sample tiles not found (looked in {', '.join(map(str, candidates))}); expected "
        "<dir>/train/{images,masks}, <dir>/val/{images,masks} and <dir>/tanzania/{image,mask}.tif; "
        "reinstall rsseg, or pass the folder of a source checkout's sample_tiles"
    )


def check_demo_dir(out: Path, overwrite: bool) -> None:
    """Refuse, before any work, an output folder that holds a demo run already, unless ``overwrite``."""
    held = [name for name in DEMO_OUTPUTS if (out / name).exists()]
    if held and not overwrite:
        raise OutputExistsError(f"{out} already holds a demo run ({', '.join(held)}); pass --overwrite to replace it, "
                                "or choose another -o")


def run_demo(
    out_dir: str | Path,
    *,
    sample_dir: str | Path | None = None,
    epochs: int = 12,
    regularizers: list[str] | None = None,
    crop_size: int = 256,
    seed: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
    on_progress: ProgressFn | None = None,
) -> DemoResult:
    """Train, predict and evaluate; ``seed`` replaces the config's training seed, ``progress`` shows
    training progress, ``on_progress(done, total)`` receives the prediction's windows. An output
    folder that holds a demo run already is refused unless ``overwrite`` (then it is replaced)."""
    from rsseg.evaluation import evaluate_prediction
    from rsseg.inference import Predictor, predict_file
    from rsseg.training import train

    samples = find_sample_tiles(sample_dir)
    out = Path(out_dir)
    check_demo_dir(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    cfg = training_config(
        dataset="folder",
        root=str(samples),
        regularizers=regularizers or ["none"],
        overrides=[f"optim.max_epochs={epochs}", f"optim.crop_size={crop_size}", "optim.lr=1e-3", "optim.backbone_lr_factor=1.0",
                   *([f"optim.seed={seed}"] if seed is not None else [])],
    )
    result = train(cfg, out / "run", overwrite=overwrite, progress=progress)
    ckpt = result.best or result.last
    if ckpt is None:
        raise CheckpointNotFoundError("training produced no checkpoint")

    # the checkpoint's own inference settings (CPU batch cap included), like `rsseg predict`
    predictor = Predictor.from_checkpoint(ckpt)
    image, mask = samples / "tanzania" / "image.tif", samples / "tanzania" / "mask.tif"
    classes_tif, polygons, areas = out / "tanzania_classes.tif", out / "tanzania_buildings.gpkg", out / "tanzania_areas.json"
    # overwrite: the folder was checked as a whole before training (check_demo_dir)
    predict_file(predictor, image, classes_tif, vector_path=polygons, report_path=areas, overwrite=True,
                 model_path=ckpt, on_progress=on_progress)
    eval_dir = out / "evaluation"
    evaluation = evaluate_prediction(classes_tif, mask, eval_dir, model=ckpt, train_freq=predictor.meta.class_pixel_freq,
                                     extra={"checkpoint": str(ckpt)})
    # the viewer opens files under one folder only: the output folder, with copies of the inputs
    # (4 MB) rather than the common ancestor of the samples and the outputs (often /)
    viewer_dir = out.resolve()
    shown = {}
    for name, path in (("image", image), ("mask", mask)):
        shown[name] = Path(f"tanzania_{name}.tif")
        shutil.copyfile(path, viewer_dir / shown[name])
    return DemoResult(
        ckpt, classes_tif, polygons, areas, eval_dir, evaluation.markdown,
        viewer_dir, shown["image"], ckpt.resolve().relative_to(viewer_dir), shown["mask"],
    )
