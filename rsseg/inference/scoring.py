"""The one scoring path: class ids vs a reference -> confusion matrix -> report.

``rsseg predict --reference`` (band by band, :mod:`rsseg.inference.products`), ``rsseg evaluate``
(a class raster against a reference, :func:`score_prediction`; a checkpoint on a dataset split)
and the viewer all score with :class:`~rsseg.metrics.confusion.ConfusionAccumulator` (the one
confusion matrix, in the metrics layer; re-exported here) and report with :func:`score_report`, so they share one
validation and one set of report keys (``OA``, ``mIoU``, ``mF1``, ``per_class``...).

A reference is a class raster on the prediction's grid or a vector file whose polygons are
rasterised on it (:mod:`rsseg.inference.references`); classes named like building footprints are
also scored per object (:func:`score_objects`: matched at IoU >= 0.5, :mod:`rsseg.metrics.objects`).

Validation (each an :class:`~rsseg.errors.RsSegError` naming the values and the fix):
- the two rasters lie on one pixel grid: size, CRS and transform (:func:`check_same_grid`);
- reference values are class ids ``0..K-1``, the ignore value (255) or the reference's nodata;
- prediction values are class ids ``0..K-1`` or the prediction's nodata (255): a value >= K means
  the class names do not match the raster and is never counted as some class
  (both checked by the accumulator).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from rsseg.constants import IGNORE_INDEX
from rsseg.errors import ConfigError, InputRasterError, RsSegError
from rsseg.inference.references import VECTOR_SUFFIXES, VectorOptions, VectorReference, is_vector_reference
from rsseg.inference.vectorize import parse_vector_classes, polygonize
from rsseg.io import open_raster
from rsseg.metrics.confusion import ConfusionAccumulator
from rsseg.metrics.objects import IOU_THRESHOLD, default_object_classes, object_scores

__all__ = ["ConfusionAccumulator", "Scores", "check_same_grid", "object_class_ids", "open_reference", "score_objects",
           "score_prediction", "score_rasters", "score_report"]


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


def open_reference(path: str | Path, like: rasterio.DatasetReader, like_name: str = "input", *,
                   class_names: Sequence[str] | None = None,
                   vector: VectorOptions | None = None) -> rasterio.DatasetReader | VectorReference:
    """Open a reference on ``like``'s pixel grid: a reference mask (checked to lie on it) or a
    vector file (:data:`~rsseg.inference.references.VECTOR_SUFFIXES`), rasterised on it with
    ``class_names`` and ``vector`` (:class:`~rsseg.inference.references.VectorReference`). Both
    read as ``ref.read(1, window=...)`` with ``ref.nodata``."""
    if is_vector_reference(path):
        if class_names is None:
            raise ValueError("a vector reference needs the class names of the raster it is scored with")
        return VectorReference(path, like, list(class_names), vector, like_name)
    given = vector.flags() if vector is not None else []
    if given:
        raise ConfigError(f"{', '.join(given)} apply to a vector reference ({', '.join(VECTOR_SUFFIXES)}); {path} is "
                          "read as a raster, whose pixel values are the classes: drop them")
    ref = open_raster(path, "reference mask")
    try:
        check_same_grid(like, ref, like_name, "reference mask")
    except RsSegError:
        ref.close()
        raise
    return ref


def _blocks(width: int, height: int, size: int = 1024) -> Iterable[Window]:
    for row in range(0, height, size):
        for col in range(0, width, size):
            yield Window(col, row, min(size, width - col), min(size, height - row))


def score_rasters(pred_path: str | Path, ref_path: str | Path, num_classes: int,
                  ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Confusion matrix [K, K] of two class rasters on one grid, read block by block (constant memory).

    Reference pixels equal to ``ignore_index`` or to the reference's nodata are not scored, and
    neither are prediction nodata pixels. :func:`score_prediction` with class ids for names.
    """
    return score_prediction(pred_path, ref_path, [str(i) for i in range(num_classes)], ignore_index=ignore_index).conf


@dataclass(frozen=True)
class Scores:
    """What :func:`score_prediction` measured: the confusion matrix, the per-object scores
    (:func:`score_objects`; ``None`` when no class is scored per object) and, for a vector
    reference, how it was read (:attr:`VectorReference.summary`)."""

    conf: np.ndarray
    objects: dict[str, Any] | None = None
    vector_reference: dict[str, Any] | None = None


def score_prediction(pred_path: str | Path, ref_path: str | Path, class_names: Sequence[str], *,
                     vector: VectorOptions | None = None, object_classes: Sequence[int] = (),
                     ignore_index: int = IGNORE_INDEX) -> Scores:
    """Score a class raster against a reference raster on its grid or a vector reference
    (:func:`open_reference`), block by block, and per object for ``object_classes``."""
    with open_raster(pred_path, "prediction") as pred, \
            open_reference(ref_path, pred, "prediction", class_names=class_names, vector=vector) as ref:
        acc = ConfusionAccumulator(len(class_names), ignore_index=ignore_index, reference_nodata=ref.nodata,
                                   prediction_nodata=pred.nodata, reference_name=f"reference {ref_path}",
                                   prediction_name=f"prediction {pred_path}")
        for window in _blocks(pred.width, pred.height):
            acc.update(pred.read(1, window=window), ref.read(1, window=window))
        objects = score_objects(pred_path, ref, ref_path, class_names, object_classes) if object_classes else None
    return Scores(acc.conf, objects, getattr(ref, "summary", None))


def object_class_ids(value: str | Sequence[str | int] | None, class_names: Sequence[str]) -> list[int]:
    """The classes scored per object (``--object-classes``): names or ids, ``none`` for no class,
    default the footprint classes (:func:`~rsseg.metrics.objects.default_object_classes`)."""
    if value is None:
        return default_object_classes(class_names)
    if isinstance(value, str) and value.strip().lower() in ("", "none"):
        return []
    return parse_vector_classes(value, class_names, what="object class")


def score_objects(pred_path: str | Path, ref: rasterio.DatasetReader | VectorReference, ref_path: str | Path,
                  class_names: Sequence[str], classes: Sequence[int]) -> dict[str, Any]:
    """Per-object precision, recall and F1 of ``classes`` (:mod:`rsseg.metrics.objects`).

    Predicted objects are the 4-connected regions of each class in the prediction raster (every
    region, however small: the polygons ``rsseg predict --vector`` traces before its minimum area);
    reference objects are a vector reference's polygons cut to the raster's bounds, or the
    regions of a reference raster. The report's ``objects`` key: ``iou_threshold`` and one row
    per class (``class``, ``reference_objects``, ``predicted_objects``, ``tp``, ``fp``, ``fn``,
    ``precision``, ``recall``, ``f1``).
    """
    names = list(class_names)
    predicted = polygonize(pred_path, names, min_area=0, simplify=0, classes=classes)
    if isinstance(ref, VectorReference):
        def reference_of(k: int) -> np.ndarray:
            return ref.objects(k)
    else:
        traced = polygonize(ref_path, names, min_area=0, simplify=0, classes=classes)

        def reference_of(k: int) -> np.ndarray:
            return traced.geometry[traced["class_id"] == k].to_numpy()
    rows = []
    for k in classes:
        scores = object_scores(reference_of(k), predicted.geometry[predicted["class_id"] == k].to_numpy(), IOU_THRESHOLD)
        rows.append({"class": names[k]} | scores.to_dict())
    return {"iou_threshold": IOU_THRESHOLD, "connectivity": 4, "per_class": rows}


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
