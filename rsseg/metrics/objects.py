"""Per-object precision, recall and F1 of footprint classes (buildings), the SpaceNet/CrowdAI rule.

Objects are polygons: the reference's own polygons (a vector reference) or the connected regions
of a class raster (the prediction, a raster reference). A predicted object and a reference object
match when their IoU (area of intersection over area of union) is at least ``iou_threshold``
(0.5), each object in at most one pair, chosen greedily by decreasing IoU. When the objects of each
side are disjoint (connected regions always are), a pair with IoU above 0.5 shares more than half
of both objects, so no object has two such partners and the greedy choice is the optimal one.

TP = matched pairs, FP = predicted objects left unmatched, FN = reference objects left unmatched;
precision = TP / predicted, recall = TP / reference, F1 = 2 TP / (predicted + reference), each
``None`` when its denominator is 0 (no evidence, as the pixel scores' NaN).

numpy and shapely only: no raster reading here (:mod:`rsseg.inference.scoring` makes the polygons).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely

#: the IoU at which a predicted object counts as found (SpaceNet, CrowdAI mapping challenge)
IOU_THRESHOLD = 0.5
#: class names scored per object by default: footprints, whose count matters to analysts
FOOTPRINT_NAMES = ("building", "buildings")


def default_object_classes(class_names: Sequence[str]) -> list[int]:
    """Class ids scored per object when none are named: the classes named like building
    footprints (:data:`FOOTPRINT_NAMES`; ISPRS, LoveDA and the OAM building sets call it ``building``)."""
    return [i for i, name in enumerate(class_names) if name.strip().lower() in FOOTPRINT_NAMES]


@dataclass(frozen=True)
class ObjectScores:
    """Counts and scores of one class's objects."""

    reference: int
    predicted: int
    tp: int

    @property
    def fp(self) -> int:
        return self.predicted - self.tp

    @property
    def fn(self) -> int:
        return self.reference - self.tp

    @property
    def precision(self) -> float | None:
        return self.tp / self.predicted if self.predicted else None

    @property
    def recall(self) -> float | None:
        return self.tp / self.reference if self.reference else None

    @property
    def f1(self) -> float | None:
        total = self.predicted + self.reference
        return 2 * self.tp / total if total else None

    def to_dict(self) -> dict[str, Any]:
        return {"reference_objects": self.reference, "predicted_objects": self.predicted, "tp": self.tp,
                "fp": self.fp, "fn": self.fn, "precision": self.precision, "recall": self.recall, "f1": self.f1}


def _polygons(geoms: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Valid polygonal geometries with an area (self-intersecting rings repaired, points and lines dropped)."""
    arr = np.asarray(list(geoms), dtype=object)
    if not len(arr):
        return arr
    arr = shapely.make_valid(arr)
    return arr[shapely.area(arr) > 0]


def match_objects(reference: Sequence[Any] | np.ndarray, prediction: Sequence[Any] | np.ndarray,
                  iou_threshold: float = IOU_THRESHOLD) -> list[tuple[int, int, float]]:
    """One-to-one matches ``(reference index, prediction index, IoU)`` with IoU >= ``iou_threshold``,
    greedily by decreasing IoU. Indices are into the polygonal geometries with an area, in order
    (see :func:`object_scores`)."""
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    ref, pred = _polygons(reference), _polygons(prediction)
    if not len(ref) or not len(pred):
        return []
    # candidate pairs: bounding boxes that meet, then exact areas
    ri, pi = shapely.STRtree(pred).query(ref, predicate="intersects")
    if not len(ri):
        return []
    inter = shapely.area(shapely.intersection(ref[ri], pred[pi]))
    union = shapely.area(ref[ri]) + shapely.area(pred[pi]) - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    keep = iou >= iou_threshold
    ri, pi, iou = ri[keep], pi[keep], iou[keep]
    used_ref, used_pred, matches = set(), set(), []
    for k in np.argsort(-iou, kind="stable"):
        r, p = int(ri[k]), int(pi[k])
        if r not in used_ref and p not in used_pred:
            used_ref.add(r)
            used_pred.add(p)
            matches.append((r, p, float(iou[k])))
    return matches


def object_scores(reference: Sequence[Any] | np.ndarray, prediction: Sequence[Any] | np.ndarray,
                  iou_threshold: float = IOU_THRESHOLD) -> ObjectScores:
    """:class:`ObjectScores` of predicted against reference polygons (one class, one CRS)."""
    ref, pred = _polygons(reference), _polygons(prediction)
    return ObjectScores(len(ref), len(pred), len(match_objects(ref, pred, iou_threshold)))
