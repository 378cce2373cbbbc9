"""The one scoring path: class ids vs a reference -> confusion matrix -> report.

``rsseg predict --reference`` (band by band, :mod:`rsseg.inference.products`), ``rsseg evaluate``
(two rasters, :func:`score_rasters`; a checkpoint on a dataset split) and the viewer all score
with :class:`ConfusionAccumulator` and report with :func:`score_report`, so they share one
validation and one set of report keys (``OA``, ``mIoU``, ``mF1``, ``per_class``...).

Validation (each an :class:`~rsseg.errors.RsSegError` naming the values and the fix):
- the two rasters lie on one pixel grid: size, CRS and transform (:func:`check_same_grid`);
- reference values are class ids ``0..K-1``, the ignore value (255) or the reference's nodata;
- prediction values are class ids ``0..K-1`` or the prediction's nodata (255): a value >= K means
  the class names do not match the raster and is never counted as some class.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from rsseg.errors import ConfigError, InputRasterError, LabelError, RsSegError
from rsseg.inference.cog import CLASS_NODATA
from rsseg.io import open_raster

#: label value never scored (rsseg's one ignore value; class rasters use it as nodata)
IGNORE_INDEX = CLASS_NODATA


def check_same_grid(pred: rasterio.DatasetReader, ref: rasterio.DatasetReader, pred_name: str = "prediction",
                    ref_name: str = "reference") -> None:
    """Refuse two rasters that are not on one pixel grid (size, CRS, transform)."""
    if (pred.width, pred.height) != (ref.width, ref.height):
        raise InputRasterError(f"{ref_name} {ref.name} is {ref.width}x{ref.height} pixels but the {pred_name} {pred.name} "
                               f"is {pred.width}x{pred.height}; they must be on the same grid "
                               "(reproject/resample one with gdalwarp first)")
    if pred.crs != ref.crs:
        raise InputRasterError(f"CRS differ: {pred_name} {pred.name} has {pred.crs}, {ref_name} {ref.name} has {ref.crs}; "
                               "reproject one with gdalwarp first")
    tol = 1e-9 * max(1.0, abs(pred.transform.a))
    if not np.allclose(tuple(pred.transform)[:6], tuple(ref.transform)[:6], rtol=0, atol=tol):
        raise InputRasterError(f"pixel grids differ: {pred_name} {pred.name} and {ref_name} {ref.name} have different "
                               "transforms (origin or pixel size); resample one onto the other's grid with gdalwarp")


def open_reference(path: str | Path, like: rasterio.DatasetReader, like_name: str = "input") -> rasterio.DatasetReader:
    """Open a reference mask and check it lies on ``like``'s pixel grid."""
    ref = open_raster(path, "reference mask")
    try:
        check_same_grid(like, ref, like_name, "reference mask")
    except RsSegError:
        ref.close()
        raise
    return ref


class ConfusionAccumulator:
    """Confusion matrix [K, K] (rows reference, columns prediction), fed band by band."""

    def __init__(self, num_classes: int, *, ignore_index: int = IGNORE_INDEX, reference_nodata: float | None = None,
                 prediction_nodata: float | None = CLASS_NODATA, reference_name: str = "reference",
                 prediction_name: str = "prediction") -> None:
        if not 1 <= num_classes <= CLASS_NODATA:
            raise ConfigError(f"{num_classes} classes cannot be scored (1..{CLASS_NODATA} class ids)")
        self.k = num_classes
        self.ignore_index = ignore_index
        self.reference_nodata, self.prediction_nodata = reference_nodata, prediction_nodata
        self.reference_name, self.prediction_name = reference_name, prediction_name
        self.conf = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, prediction: np.ndarray, reference: np.ndarray) -> None:
        """Add co-registered class ids ``prediction`` and ``reference`` (same shape)."""
        if prediction.shape != reference.shape:
            raise ValueError(f"prediction {prediction.shape} and reference {reference.shape} differ in shape")
        p, r = np.asarray(prediction), np.asarray(reference)
        skip_ref = r == self.ignore_index
        nd = self.reference_nodata
        if nd is not None:
            skip_ref |= np.isnan(r) if isinstance(nd, float) and math.isnan(nd) else r == nd
        # a float reference must hold whole class ids; NaN fails every comparison, so it is bad unless nodata
        whole = (r == np.floor(r)) if r.dtype.kind == "f" else True
        bad = ~skip_ref & ~((r >= 0) & (r < self.k) & whole)
        if bad.any():
            vals = np.unique(r[bad])[:10].tolist()
            raise LabelError(f"{self.reference_name} holds values {vals} outside the {self.k} classes "
                             f"(0..{self.k - 1}, {self.ignore_index} = ignore); recode it or give the right class names")
        skip_pred = p == self.prediction_nodata if self.prediction_nodata is not None else np.zeros(p.shape, bool)
        bad = ~skip_pred & ~((p >= 0) & (p < self.k))
        if bad.any():
            vals = np.unique(p[bad])[:10].tolist()
            raise LabelError(f"{self.prediction_name} holds class ids {vals} but only {self.k} classes are named "
                             f"(0..{self.k - 1}); pass the full class list (--classes) or check the raster")
        keep = ~(skip_ref | skip_pred)
        if not keep.any():
            return
        pair = r[keep].astype(np.int64) * self.k + p[keep].astype(np.int64)
        self.conf += np.bincount(pair, minlength=self.k * self.k).reshape(self.k, self.k)


def _blocks(width: int, height: int, size: int = 1024) -> Iterable[Window]:
    for row in range(0, height, size):
        for col in range(0, width, size):
            yield Window(col, row, min(size, width - col), min(size, height - row))


def score_rasters(pred_path: str | Path, ref_path: str | Path, num_classes: int,
                  ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Confusion matrix [K, K] of two class rasters on one grid, read block by block (constant memory).

    Reference pixels equal to ``ignore_index`` or to the reference's nodata are not scored, and
    neither are prediction nodata pixels.
    """
    with open_raster(pred_path, "prediction") as pred, open_raster(ref_path, "reference") as ref:
        check_same_grid(pred, ref)
        acc = ConfusionAccumulator(num_classes, ignore_index=ignore_index, reference_nodata=ref.nodata,
                                   prediction_nodata=pred.nodata, reference_name=f"reference {ref_path}",
                                   prediction_name=f"prediction {pred_path}")
        for window in _blocks(pred.width, pred.height):
            acc.update(pred.read(1, window=window), ref.read(1, window=window))
    return acc.conf


def _json_number(v: Any) -> Any:
    """NaN (no evidence for a class) becomes null in JSON; tensors/numpy become Python numbers."""
    if hasattr(v, "item"):  # numpy scalars, 0-d tensors
        v = v.item()
    return None if isinstance(v, float) and math.isnan(v) else v


def score_report(conf: np.ndarray, class_names: list[str], *, exclude: list[int] | None = None,
                 train_freq: list[float] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Scores of a confusion matrix as plain data: the one report every scoring caller writes.

    Keys: ``classes``, ``excluded_from_means``, ``OA``, ``mIoU``, ``mF1``, ``per_class`` (rows of
    class, iou, f1, precision, recall, support), ``confusion_matrix``; with ``train_freq`` also
    ``groups`` (head/common/tail mIoU) and a ``group`` per class; ``extra`` is merged in.
    """
    from rsseg.metrics import head_common_tail, segmentation_scores

    if conf.shape != (len(class_names), len(class_names)):
        raise ConfigError(f"{len(class_names)} class names for a {conf.shape[0]}-class confusion matrix")
    scores = segmentation_scores(conf, class_names, exclude=exclude)
    report: dict[str, Any] = {
        "classes": list(class_names),
        "excluded_from_means": scores["excluded"],
        "OA": _json_number(scores["oa"]),
        "mIoU": _json_number(scores["miou"]),
        "mF1": _json_number(scores["mf1"]),
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
