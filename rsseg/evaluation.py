"""``rsseg evaluate``: confusion matrices from rasters or checkpoints, written as reports.

Two entry points feed one report writer:
- :func:`evaluate_rasters`: a prediction raster against a reference raster on the same grid,
  read block by block (constant memory);
- :func:`evaluate_checkpoint`: a checkpoint run with sliding windows (and optional TTA) over the
  whole tiles of a dataset split.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window

from rsseg.errors import RsSegError
from rsseg.inference.raster import open_input
from rsseg.io import atomic_path, write_json
from rsseg.metrics import confusion_matrix, head_common_tail, segmentation_scores


def class_names_from_raster(path: str | Path) -> list[str] | None:
    """Class names that ``rsseg predict`` stores as ``CLASS_0``, ``CLASS_1``... tags, if any.

    The per-class tags (not the comma-joined ``CLASS_NAMES``) are read so names may hold commas.
    """
    with open_input(path, "prediction") as src:
        tags = src.tags()
    names = []
    while f"CLASS_{len(names)}" in tags:
        names.append(tags[f"CLASS_{len(names)}"])
    return names or None


def _blocks(width: int, height: int, size: int = 1024) -> Iterable[Window]:
    for row in range(0, height, size):
        for col in range(0, width, size):
            yield Window(col, row, min(size, width - col), min(size, height - row))


def evaluate_rasters(
    pred_path: str | Path, ref_path: str | Path, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """Confusion matrix [K,K] (rows reference, columns prediction) of two aligned class rasters.

    The rasters must share size, CRS and transform; reference pixels equal to ``ignore_index`` or
    to the reference's nodata are ignored, and so are prediction nodata pixels.
    """
    with open_input(pred_path, "prediction") as pred, open_input(ref_path, "reference") as ref:
        if (pred.width, pred.height) != (ref.width, ref.height):
            raise RsSegError(
                f"{pred_path} is {pred.width}x{pred.height} but {ref_path} is {ref.width}x{ref.height}: "
                "evaluate needs rasters on the same grid (reproject/resample one with gdalwarp first)"
            )
        if pred.crs != ref.crs:
            raise RsSegError(f"CRS differ: {pred_path} has {pred.crs}, {ref_path} has {ref.crs}")
        if not np.allclose(tuple(pred.transform)[:6], tuple(ref.transform)[:6], rtol=0, atol=1e-9 * max(1.0, abs(pred.transform.a))):
            raise RsSegError(f"pixel grids differ: {pred_path} and {ref_path} have different transforms")
        conf = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        for window in _blocks(pred.width, pred.height):
            p = pred.read(1, window=window).astype(np.int64)
            r = ref.read(1, window=window).astype(np.int64)
            invalid = r == ignore_index
            if ref.nodata is not None:
                invalid |= r == int(ref.nodata)
            if pred.nodata is not None:
                invalid |= p == int(pred.nodata)
            bad = (~invalid) & ((r < 0) | (r >= num_classes))
            if bad.any():
                raise RsSegError(
                    f"reference {ref_path} holds values {sorted(set(np.unique(r[bad]).tolist()))[:10]} outside the "
                    f"{num_classes} classes (0..{num_classes - 1}, {ignore_index} = ignore)"
                )
            r[invalid] = ignore_index
            p[invalid | (p >= num_classes)] = 0
            conf += confusion_matrix(torch.from_numpy(p), torch.from_numpy(r), num_classes, ignore_index)
    return conf


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    root: str | None = None,
    split: str = "val",
    tta: str | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    batch: int | None = None,
    device: str = "auto",
    eroded_labels: bool | None = None,
    progress: bool = True,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Run a checkpoint with sliding windows over every whole tile of a dataset split.

    Returns the confusion matrix and the checkpoint's metadata as a dict.
    """
    from rich.progress import Progress

    from rsseg.checkpoint import load_model
    from rsseg.data import build_datamodule
    from rsseg.inference.settings import predictor_from_checkpoint_config

    model, meta = load_model(checkpoint)
    cfg = meta.build_config()
    if root is not None:
        cfg.dataset.root = root
    if eroded_labels is not None:
        cfg.dataset.eroded_labels = eroded_labels
    predictor = predictor_from_checkpoint_config(
        model, meta, tile=tile, overlap=overlap, batch=batch, tta=tta, device=device
    )
    dm = build_datamodule(cfg)
    k = meta.num_classes
    conf = torch.zeros(k, k, dtype=torch.int64)
    tiles = list(dm.eval_tiles(split))
    if not tiles:
        raise RsSegError(f"split {split!r} of {cfg.dataset.root} has no labelled tiles to evaluate")
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"evaluating {split}", total=len(tiles))
        for item in tiles:
            probs = predictor.predict_probs(item["image"])
            conf += confusion_matrix(probs.argmax(0).cpu(), item["mask"], k, meta.ignore_index)
            bar.advance(task)
    return conf, meta.to_dict()


def _json_number(v: float | int) -> float | int | None:
    """NaN (no evidence for a class) becomes null in JSON."""
    return None if isinstance(v, float) and math.isnan(v) else v


def _fmt(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def build_report(
    conf: torch.Tensor,
    class_names: list[str],
    *,
    exclude: list[int] | None = None,
    train_freq: list[float] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Scores of a confusion matrix as plain data (what report.json holds)."""
    scores = segmentation_scores(conf, class_names, exclude=exclude)
    report: dict[str, Any] = {
        "classes": class_names,
        "excluded_from_means": scores["excluded"],
        "OA": scores["oa"],
        "mIoU": scores["miou"],
        "mF1": scores["mf1"],
        "per_class": [
            {"class": name} | {k: _json_number(v) for k, v in scores["per_class"][name].items()} for name in class_names
        ],
        "confusion_matrix": conf.tolist(),
    }
    if train_freq is not None:
        groups = head_common_tail(train_freq)
        report["groups"] = {}
        for group in ("head", "common", "tail"):
            ious = [row["iou"] for row, g in zip(report["per_class"], groups, strict=True) if g == group and row["iou"] is not None]
            report["groups"][group] = float(np.mean(ious)) if ious else None
        for row, g in zip(report["per_class"], groups, strict=True):
            row["group"] = g
    if extra:
        report |= extra
    return report


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
    return "\n".join(lines) + "\n"


def _confusion_png(conf: torch.Tensor, class_names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = conf.double().numpy()
    norm = c / np.maximum(c.sum(1, keepdims=True), 1)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * k, 1.0 + 0.7 * k), dpi=100)
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
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write report.json, report.md, per_class.csv and confusion.png into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("report.json", "report.md", "per_class.csv", "confusion.png")}
    write_json(paths["report.json"], report)
    with atomic_path(paths["report.md"]) as tmp:
        tmp.write_text(report_markdown(report))
    with atomic_path(paths["per_class.csv"]) as tmp, tmp.open("w", newline="") as fh:
        fields = ["class", "iou", "f1", "precision", "recall", "support"] + (["group"] if "groups" in report else [])
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(report["per_class"])
    _confusion_png(torch.tensor(report["confusion_matrix"]), report["classes"], paths["confusion.png"])
    return paths
