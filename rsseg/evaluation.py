"""``rsseg evaluate``: confusion matrices from rasters or checkpoints, written as reports.

Scoring itself (validation, confusion matrix, report keys) has one home,
:mod:`rsseg.inference.scoring`; this module adds the two evaluate sources and the report files:
- :func:`evaluate_prediction`: a prediction raster against a reference raster on the same grid or a
  vector reference rasterised on it, with per-object scores of the footprint classes
  (:func:`rsseg.inference.scoring.score_rasters`: the confusion matrix alone);
- :func:`evaluate_checkpoint`: a checkpoint run with sliding windows (and optional TTA) over the
  whole tiles of a dataset split;
- :func:`write_evaluation`: the one evaluate sequence (score -> report.json/.md, per_class.csv,
  confusion.png) that ``rsseg evaluate``, the demo and the viewer share.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rsseg.errors import ConfigError, DatasetError, InputRasterError, OutputPathError
from rsseg.inference.predictor import Predictor
from rsseg.inference.references import VectorOptions
from rsseg.inference.report import provenance
from rsseg.inference.scoring import object_class_ids, score_prediction, score_report
from rsseg.inference.settings import PredictSettings
from rsseg.io import atomic_path, open_raster, write_error, write_json
from rsseg.metrics.confusion import ConfusionAccumulator
from rsseg.progress import ProgressFn

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: the files an evaluation writes into its report folder
REPORT_FILES = ("report.json", "report.md", "per_class.csv", "confusion.png")


def class_names_from_raster(path: str | Path) -> list[str] | None:
    """Class names that ``rsseg predict`` stores as ``CLASS_0``, ``CLASS_1``... tags, if any.

    The per-class tags (not the comma-joined ``CLASS_NAMES``) are read so names may hold commas.
    """
    with open_raster(path, "prediction") as src:
        tags = src.tags()
    names = []
    while f"CLASS_{len(names)}" in tags:
        names.append(tags[f"CLASS_{len(names)}"])
    return names or None


def raster_class_names(pred_path: str | Path, given: list[str] | None = None) -> list[str]:
    """The class names to score a prediction raster with: ``given`` (``--classes``) or its tags.

    Both present with different counts is an error: one of them describes another model.
    """
    stored = class_names_from_raster(pred_path)
    if given and stored and len(given) != len(stored):
        raise ConfigError(f"--classes names {len(given)} classes but {pred_path} was written with {len(stored)} "
                          f"({', '.join(stored)}); drop --classes or give all {len(stored)}")
    names = given or stored
    if not names:
        raise InputRasterError(f"{pred_path} carries no class names; pass --classes name0,name1,...")
    return names


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    root: str | None = None,
    split: str = "val",
    settings: PredictSettings | None = None,
    eroded_labels: bool | None = None,
    on_progress: ProgressFn | None = None,
) -> tuple[np.ndarray, dict[str, Any], dict[str, float]]:
    """Run a checkpoint with sliding windows over every whole tile of a dataset split.

    ``settings``: as requested (``None`` fields from the checkpoint; engine torch, onnx or auto:
    :meth:`rsseg.inference.Predictor.from_checkpoint`).
    Returns the confusion matrix, the checkpoint's metadata as a dict and the collapse diagnostics
    of the classifier input on the same tiles (NC1, Delta_inter/intra, NC3...; none for an exported
    ``.onnx`` model, whose graph ends at the logits). ``on_progress(done,
    total)`` counts tiles.
    """
    from rsseg.checkpoint import read_meta
    from rsseg.data import build_datamodule
    from rsseg.inference.contract import check_dataset_inputs, require_contract
    from rsseg.inference.settings import check_settings

    settings = settings or PredictSettings()

    # everything that can be checked is, before the model loads
    meta = read_meta(checkpoint)
    require_contract(meta, checkpoint)
    check_settings(replace(settings, engine="torch").resolve(meta))
    cfg = meta.build_config()
    if root is not None:
        cfg.dataset.root = root
    if eroded_labels is not None:
        cfg.dataset.eroded_labels = eroded_labels
    dm = build_datamodule(cfg)
    tiles = dm.eval_tiles(split)  # refuses a split without labels
    check_dataset_inputs(dm.input_files(split), meta)
    predictor = Predictor.from_checkpoint(checkpoint, settings)
    tiles = list(tiles)
    if not tiles:
        raise DatasetError(f"split {split!r} of {cfg.dataset.root} has no labelled tiles to evaluate")
    acc = ConfusionAccumulator(meta.num_classes, ignore_index=meta.ignore_index, prediction_nodata=None,
                               reference_name=f"{split} labels")
    for i, item in enumerate(tiles, 1):
        probs = predictor.predict_probs(item["image"])
        acc.update(probs.argmax(0), np.asarray(item["mask"]))
        if on_progress is not None:
            on_progress(i, len(tiles))
    return acc.conf, meta.to_dict(), _collapse(checkpoint, predictor, tiles, meta)


def _collapse(checkpoint: str | Path, predictor: Predictor, tiles: list[dict[str, Any]], meta: Any) -> dict[str, float]:
    """Neural-collapse diagnostics of the classifier input on the evaluated tiles
    (:func:`rsseg.metrics.collapse.collapse_diagnostics`); the ONNX engine has no embedding to read,
    so the checkpoint's torch model is loaded for it. An exported ``.onnx`` model outputs logits only:
    nothing is measured (empty)."""
    from rsseg.checkpoint import is_onnx_model, load_model
    from rsseg.inference.engines import TorchEngine
    from rsseg.metrics.collapse import collapse_diagnostics

    if is_onnx_model(checkpoint):
        return {}
    if isinstance(predictor.engine, TorchEngine):  # the file engines (ONNX Runtime, OpenVINO) end at the logits
        model, device = predictor.engine.model, predictor.settings.device
    else:
        model, device = load_model(checkpoint)[0], "cpu"
    return collapse_diagnostics(model, tiles, meta.num_classes, meta.ignore_index, device=device, window=predictor.settings.tile)


def _fmt(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def report_markdown(report: dict[str, Any]) -> str:
    lines = ["| class | IoU | F1 | precision | recall | pixels |", "|---|---:|---:|---:|---:|---:|"]
    for row in report["per_class"]:
        lines.append(
            f"| {row['class']} | {_fmt(row['iou'])} | {_fmt(row['f1'])} | {_fmt(row['precision'])} | "
            f"{_fmt(row['recall'])} | {int(row['support']):,} |"
        )
    excl = report["excluded_from_means"]
    note = f" (means exclude {', '.join(excl)})" if excl else ""
    lines += ["", f"**OA** {_fmt(report['OA'])}  **mIoU** {_fmt(report['mIoU'])}  **mF1** {_fmt(report['mF1'])}{note}"]
    if "groups" in report:
        lines.append(
            "head / common / tail mIoU: " + " / ".join(_fmt(report["groups"][g]) for g in ("head", "common", "tail"))
        )
    if report.get("objects"):
        objects = report["objects"]
        lines += ["", f"Objects (matched one-to-one at IoU >= {objects['iou_threshold']}):", "",
                  "| class | reference | predicted | TP | FP | FN | precision | recall | F1 |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in objects["per_class"]:
            lines.append(f"| {row['class']} | {row['reference_objects']:,} | {row['predicted_objects']:,} | {row['tp']:,} | "
                         f"{row['fp']:,} | {row['fn']:,} | {_fmt(row['precision'])} | {_fmt(row['recall'])} | "
                         f"{_fmt(row['f1'])} |")
    return "\n".join(lines) + "\n"


def object_lines(report: dict[str, Any]) -> list[str]:
    """One line per class scored per object (the ``objects`` key of a report or of its ``metrics``)."""
    objects = report.get("objects")
    if not objects:
        return []
    return [f"objects of {row['class']} (IoU >= {objects['iou_threshold']}): precision {_fmt(row['precision'])}, "
            f"recall {_fmt(row['recall'])}, F1 {_fmt(row['f1'])} (TP {row['tp']:,}, FP {row['fp']:,}, FN {row['fn']:,}; "
            f"{row['reference_objects']:,} reference, {row['predicted_objects']:,} predicted)"
            for row in objects["per_class"]]


def confusion_figure(conf: np.ndarray, class_names: list[str]) -> Figure:
    """The row-normalised confusion matrix as a matplotlib figure (close it after use). Constrained
    layout sizes the axes so the title, the class names and the colour bar stay inside the figure,
    however few classes (a 2-class matrix is narrower than its title) or long their names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = np.asarray(conf, dtype=np.float64)
    norm = c / np.maximum(c.sum(1, keepdims=True), 1)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 + 0.8 * k), max(3.2, 1.2 + 0.7 * k)), dpi=100, layout="constrained")
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("reference")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046, label="row-normalised")
    ax.set_title("confusion matrix (rows sum to 1)")
    return fig


def _confusion_png(conf: np.ndarray, class_names: list[str], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = confusion_figure(conf, class_names)
    with atomic_path(path) as tmp:
        # a tight box keeps whatever the layout could not fit (a very long class name) in the picture
        fig.savefig(tmp, format="png", bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)


def check_report_dir(out_dir: str | Path) -> Path:
    """Refuse, before any work, a report folder that cannot be made or written (a file on the
    way, a read-only parent)."""
    out = Path(out_dir)
    existing = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise OutputPathError(f"cannot make the report folder {out}: {existing} is a file; choose another -o/--out")
    if not os.access(existing, os.W_OK):
        raise OutputPathError(f"cannot write the report folder {out}: {existing} is not writable")
    return out


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write report.json, report.md, per_class.csv and confusion.png into ``out_dir``."""
    out = check_report_dir(out_dir)
    try:
        return _write_report(report, out)
    except Exception as exc:
        err = write_error(exc, "evaluation report", out)
        if err is not None:
            raise err from None
        raise


def _write_report(report: dict[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in REPORT_FILES}
    write_json(paths["report.json"], report)
    with atomic_path(paths["report.md"]) as tmp:
        tmp.write_text(report_markdown(report))
    with atomic_path(paths["per_class.csv"]) as tmp, tmp.open("w", newline="") as fh:
        fields = ["class", "iou", "f1", "precision", "recall", "support"] + (["group"] if "groups" in report else [])
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(report["per_class"])
    _confusion_png(np.array(report["confusion_matrix"]), report["classes"], paths["confusion.png"])
    return paths


@dataclass(frozen=True)
class Evaluation:
    """What :func:`write_evaluation` produced: the report dict, its Markdown, and the files."""

    report: dict[str, Any]
    markdown: str
    paths: dict[str, Path]


def write_evaluation(conf: np.ndarray, class_names: list[str], out_dir: str | Path, *,
                     exclude: list[str] | None = None, dataset: str | None = None,
                     train_freq: list[float] | None = None, extra: dict[str, Any] | None = None) -> Evaluation:
    """The one evaluate sequence: scores (:func:`score_report`) -> report files in ``out_dir``.

    ``exclude``: class names left out of mIoU/mF1 (OA keeps them); ``None`` applies the dataset's
    convention (:func:`rsseg.metrics.default_exclusions`).
    """
    from rsseg.metrics import default_exclusions

    if exclude is None:
        excluded = default_exclusions(dataset, class_names)
    else:
        unknown = [c for c in exclude if c not in class_names]
        if unknown:
            raise ConfigError(f"--exclude names unknown classes {unknown}; classes are {class_names}")
        excluded = [class_names.index(c) for c in exclude]
    report = score_report(conf, class_names, exclude=excluded, train_freq=train_freq, extra=extra)
    return Evaluation(report, report_markdown(report), write_report(report, out_dir))


def evaluate_prediction(pred_path: str | Path, ref_path: str | Path, out_dir: str | Path, *,
                        class_names: list[str] | None = None, vector: VectorOptions | None = None,
                        object_classes: str | list[str | int] | None = None, model: str | Path | None = None,
                        **kwargs: Any) -> Evaluation:
    """Score a class raster against a reference and write the report files.

    The reference is a class raster on the prediction's grid or a vector file rasterised on it
    with ``vector`` (:func:`rsseg.inference.scoring.open_reference`). ``class_names``: default the
    names stored in the prediction; ``object_classes``: classes also scored per object (names or
    ids, ``"none"``; default the footprint classes, :func:`~rsseg.inference.scoring.object_class_ids`),
    under the report's ``objects`` key; ``model``: the model file that made the prediction, named in
    the report's provenance when known; ``kwargs`` go to :func:`write_evaluation` (``extra`` gains
    the two paths, the provenance and ``vector_reference``: how a vector reference was read).
    """
    names = raster_class_names(pred_path, class_names)
    objects = object_class_ids(object_classes, names)
    scores = score_prediction(pred_path, ref_path, names, vector=vector, object_classes=objects)
    used = {"classes": names, "exclude": kwargs.get("exclude"), "object_classes": [names[i] for i in objects]}
    extra: dict[str, Any] = {"prediction": str(pred_path), "reference": str(ref_path),
                             "provenance": provenance([pred_path, ref_path], used, model)}
    if scores.vector_reference is not None:
        extra["vector_reference"] = scores.vector_reference
    if scores.objects is not None:
        extra["objects"] = scores.objects
    return write_evaluation(scores.conf, names, out_dir, extra=extra | (kwargs.pop("extra", None) or {}), **kwargs)
