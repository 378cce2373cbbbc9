"""Scores read from a confusion matrix (built in :mod:`rsseg.metrics.confusion`): per-class
IoU/F1/precision/recall, OA, mIoU, mF1.

Conventions (ISPRS / In2NeCT Table 1): rows are the reference class, columns the prediction;
OA counts every class, while mIoU / mF1 / mean precision / mean recall are averaged over the
classes not in ``exclude`` (ISPRS benchmarks leave clutter out of the means).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from rsseg.errors import LabelError

if TYPE_CHECKING:
    from torch import Tensor


def _as_numpy(conf: Any) -> np.ndarray:
    """A confusion matrix from numpy or torch (any device) as float64 numpy; torch is not imported."""
    if hasattr(conf, "detach"):
        conf = conf.detach().cpu().numpy()
    return np.asarray(conf, dtype=np.float64)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def segmentation_scores(
    conf: Tensor | np.ndarray, class_names: list[str], exclude: list[int] | None = None
) -> dict:
    """Scores from a ``[K, K]`` confusion matrix (rows = reference, columns = prediction).

    Returns ``{"oa", "miou", "mf1", "mean_precision", "mean_recall", "per_class", "excluded",
    "total"}`` with ``per_class[name] = {"iou", "f1", "precision", "recall", "support"}``.

    - ``oa``: trace / total over ALL classes (excluded ones too, the ISPRS convention).
    - per class: ``iou = tp/(tp+fp+fn)``, ``f1 = 2tp/(2tp+fp+fn)``, ``precision = tp/(tp+fp)``,
      ``recall = tp/(tp+fn)``. A ratio with a zero denominator is NaN: e.g. a class absent from
      both reference and prediction has NaN IoU/F1 (no evidence either way), a class never
      predicted has NaN precision.
    - means over the classes not in ``exclude``, leaving NaN entries out, so the means are NaN
      only when no class has any evidence at all. A class present in only one of reference and
      prediction has IoU 0 and counts.
    """
    c = _as_numpy(conf)
    k = len(class_names)
    if c.shape != (k, k):
        raise ValueError(f"confusion matrix of shape {c.shape} does not match {k} class names")
    total = c.sum()
    if total <= 0:
        raise LabelError("confusion matrix is empty: the reference has no valid (non-ignored) pixel")
    excluded = sorted(set(exclude or []))
    if any(not 0 <= i < k for i in excluded):
        raise ValueError(f"exclude indices {excluded} must lie in 0..{k - 1}")
    tp = np.diag(c)
    fp = c.sum(0) - tp
    fn = c.sum(1) - tp
    iou = _ratio(tp, tp + fp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    keep = np.array([i not in excluded for i in range(k)])
    per_class = {
        name: {
            "iou": float(iou[i]),
            "f1": float(f1[i]),
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "support": int(tp[i] + fn[i]),
        }
        for i, name in enumerate(class_names)
    }
    return {
        "oa": float(tp.sum() / total),
        "miou": _nanmean(iou[keep]),
        "mf1": _nanmean(f1[keep]),
        "mean_precision": _nanmean(precision[keep]),
        "mean_recall": _nanmean(recall[keep]),
        "per_class": per_class,
        "excluded": [class_names[i] for i in excluded],
        "total": int(total),
    }


def default_exclusions(dataset: str | None, class_names: list[str]) -> list[int]:
    """Classes left out of mIoU/mF1 by a benchmark's convention, from the dataset's spec
    (:attr:`rsseg.data.datasets.DatasetSpec.exclude`): clutter for ISPRS Potsdam and Vaihingen
    (OA keeps it); none elsewhere (LoveDA reports all 7 classes), nor for an unknown dataset."""
    from rsseg.data.datasets import dataset_names, get_dataset

    if dataset not in dataset_names():
        return []
    return get_dataset(dataset).exclusions(class_names)


def head_common_tail(freq: list[float]) -> list[str]:
    """Split classes into ``"head"``/``"common"``/``"tail"`` by training-frequency terciles.

    Classes are ranked by decreasing frequency (ties by index) and rank ``r`` of ``K`` goes to
    group ``floor(3 r / K)``, the ScanNet200-style split used by CeCo (66/68/66 there).
    """
    k = len(freq)
    order = sorted(range(k), key=lambda i: (-float(freq[i]), i))
    names = ("head", "common", "tail")
    groups = [""] * k
    for rank, cls in enumerate(order):
        groups[cls] = names[rank * 3 // k]
    return groups
