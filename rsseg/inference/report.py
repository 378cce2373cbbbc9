"""Per-class area report, accumulated band by band (never the whole raster in memory).

Pixel counts and geodesic areas (:mod:`rsseg.inference.areas`) per class, and, given a reference
mask on the same grid, a confusion matrix accumulated band by band and scored with
:mod:`rsseg.metrics` (per-class IoU/F1/precision/recall, OA, mIoU, mF1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from rsseg.data.constants import IGNORE_INDEX as NODATA  # class rasters' nodata = the ignore value
from rsseg.errors import RsSegError
from rsseg.inference.areas import AreaModel
from rsseg.inference.raster import open_input



class AreaAccumulator:
    """Accumulate class counts/areas (and a confusion matrix) from bands of a class raster."""

    def __init__(self, class_names: list[str], areas: AreaModel, with_reference: bool = False,
                 ignore_index: int = NODATA) -> None:
        self.class_names = list(class_names)
        self.areas = areas
        self.ignore_index = ignore_index
        k = len(class_names)
        self.pixels = np.zeros(256, np.int64)
        self.area = np.zeros(256, np.float64)
        self.conf = torch.zeros(k, k, dtype=torch.int64) if with_reference else None
        self.reference_ignored = 0

    def update(self, y0: int, classes: np.ndarray, reference: np.ndarray | None = None) -> None:
        """Add a band of class ids [n, W] uint8 starting at raster row ``y0`` (reference: [n, W])."""
        row_area = self.areas.row_areas(y0, y0 + classes.shape[0])
        if np.all(row_area == row_area[0]):
            counts = np.bincount(classes.ravel(), minlength=256)
            self.pixels += counts
            self.area += counts * row_area[0]
        else:  # geodesic pixel area changes with the row (latitude)
            for i, row in enumerate(classes):
                counts = np.bincount(row, minlength=256)
                self.pixels += counts
                self.area += counts * row_area[i]
        if self.conf is not None:
            if reference is None:
                raise ValueError("reference band missing")
            from rsseg.metrics import confusion_matrix

            k = len(self.class_names)
            ref = reference.astype(np.int64)
            bad = (ref >= k) & (ref != self.ignore_index)
            self.reference_ignored += int(bad.sum())
            ref[bad | (classes == NODATA)] = self.ignore_index  # nodata predictions are not scored
            pred = np.where(classes == NODATA, 0, classes).astype(np.int64)
            self.conf += confusion_matrix(torch.from_numpy(pred).ravel(), torch.from_numpy(ref).ravel(), k,
                                          ignore_index=self.ignore_index).to(torch.int64).cpu()

    def result(self) -> dict[str, Any]:
        """The report: per-class pixels, area_m2, percent of valid area; metrics with a reference."""
        k = len(self.class_names)
        valid_area = float(self.area[:k].sum())
        out: dict[str, Any] = {
            "valid_pixels": int(self.pixels[:k].sum()),
            "nodata_pixels": int(self.pixels[NODATA]),
            "total_area_m2": valid_area,
            "classes": [
                {"class_id": i, "class_name": name, "pixels": int(self.pixels[i]), "area_m2": float(self.area[i]),
                 "percent": 100.0 * float(self.area[i]) / valid_area if valid_area else 0.0}
                for i, name in enumerate(self.class_names)
            ],
        }
        if self.conf is not None:
            from rsseg.metrics import segmentation_scores

            out["metrics"] = _plain(segmentation_scores(self.conf, self.class_names))
            out["confusion_matrix"] = self.conf.tolist()
            out["reference_pixels_out_of_range"] = self.reference_ignored
        return out


def _plain(obj: Any) -> Any:
    """Make metrics JSON-serialisable (tensors/numpy -> Python numbers, NaN -> None)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return _plain(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return None if np.isnan(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def open_reference(path: str | Path, width: int, height: int) -> rasterio.DatasetReader:
    """Open a reference mask and check it lies on the prediction's grid."""
    ref = open_input(path, "reference mask")
    if (ref.width, ref.height) != (width, height):
        ref.close()
        raise RsSegError(f"reference mask {path} is {ref.width}x{ref.height} pixels but the input raster is "
                         f"{width}x{height}; the reference must be on the same pixel grid")
    return ref


def area_report(class_raster_path: str | Path, class_names: list[str], reference_path: str | Path | None = None,
                rows_per_band: int = 1024) -> dict[str, Any]:
    """Report for an existing class raster (uint8 ids, 255 nodata), read ``rows_per_band`` rows at a time."""
    with rasterio.open(class_raster_path) as src:
        acc = AreaAccumulator(class_names, AreaModel(src.transform, src.crs, src.width, src.height),
                              with_reference=reference_path is not None)
        ref = open_reference(reference_path, src.width, src.height) if reference_path else None
        try:
            for y0 in range(0, src.height, rows_per_band):
                win = Window(0, y0, src.width, min(rows_per_band, src.height - y0))
                acc.update(y0, src.read(1, window=win), ref.read(1, window=win) if ref else None)
        finally:
            if ref:
                ref.close()
    return acc.result()
