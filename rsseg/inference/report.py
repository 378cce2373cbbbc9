"""Per-class area report, accumulated band by band (never the whole raster in memory), and the
provenance block of every JSON report.

Pixel counts and geodesic areas (:mod:`rsseg.inference.areas`) per class, and, given a reference
mask on the same grid, the scores of :mod:`rsseg.inference.scoring` under ``metrics``. Shares and
scores are fractions 0-1 throughout (``area_fraction``, ``OA``, ``mIoU``...); tables shown to a
user print them as percent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from rsseg.inference.areas import AreaModel
from rsseg.inference.cog import CLASS_NODATA
from rsseg.inference.scoring import ConfusionAccumulator, open_reference, score_report
from rsseg.io import file_sha256, open_raster


class AreaAccumulator:
    """Accumulate class counts and areas from bands of a class raster (uint8 ids, 255 nodata)."""

    def __init__(self, class_names: list[str], areas: AreaModel) -> None:
        self.class_names = list(class_names)
        self.areas = areas
        self.pixels = np.zeros(256, np.int64)
        self.area = np.zeros(256, np.float64)

    def update(self, y0: int, classes: np.ndarray) -> None:
        """Add a band of class ids [n, W] uint8 starting at raster row ``y0``."""
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

    def result(self) -> dict[str, Any]:
        """The report: per-class pixels, area_m2 and area_fraction (0-1) of the valid area."""
        k = len(self.class_names)
        valid_area = float(self.area[:k].sum())
        return {
            "valid_pixels": int(self.pixels[:k].sum()),
            "nodata_pixels": int(self.pixels[CLASS_NODATA]),
            "total_area_m2": valid_area,
            "classes": [
                {"class_id": i, "class_name": name, "pixels": int(self.pixels[i]), "area_m2": float(self.area[i]),
                 "area_fraction": float(self.area[i]) / valid_area if valid_area else 0.0}
                for i, name in enumerate(self.class_names)
            ],
        }


def area_report(class_raster_path: str | Path, class_names: list[str], reference_path: str | Path | None = None,
                rows_per_band: int = 1024) -> dict[str, Any]:
    """Report for an existing class raster (uint8 ids, 255 nodata), read ``rows_per_band`` rows at a time;
    with ``reference_path`` (a mask on the same grid) the scores go under ``metrics``."""
    with open_raster(class_raster_path, "class") as src:
        acc = AreaAccumulator(class_names, AreaModel(src.transform, src.crs, src.width, src.height))
        ref = open_reference(reference_path, src, "class raster", class_names=class_names) if reference_path else None
        scores = (ConfusionAccumulator(len(class_names), reference_nodata=ref.nodata, prediction_nodata=CLASS_NODATA,
                                       reference_name=f"reference mask {reference_path}") if ref else None)
        try:
            for y0 in range(0, src.height, rows_per_band):
                win = Window(0, y0, src.width, min(rows_per_band, src.height - y0))
                cls = src.read(1, window=win)
                acc.update(y0, cls)
                if scores is not None:
                    scores.update(cls, ref.read(1, window=win))
        finally:
            if ref:
                ref.close()
    out = acc.result()
    if scores is not None:
        out["metrics"] = score_report(scores.conf, class_names)
    return out


def _plain(value: Any) -> Any:
    """A setting as JSON holds it: paths as text, tuples as lists."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def provenance(inputs: Sequence[str | Path], settings: Mapping[str, Any], model: str | Path | None = None) -> dict[str, Any]:
    """Where a report comes from, the ``provenance`` block of every JSON report (predict's area
    report, evaluate's): the rsseg version, the model file (name and SHA-256; ``None`` when no model
    made it, e.g. scoring two rasters), the settings used, the input file(s) and the time (UTC)."""
    from rsseg import __version__

    return {
        "rsseg_version": __version__,
        "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": None if model is None else {"file": Path(model).name, "sha256": file_sha256(model)},
        "settings": {key: _plain(value) for key, value in settings.items()},
        "inputs": [str(source) for source in inputs],
    }
