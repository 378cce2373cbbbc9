"""The error layer: where a prediction disagrees with a reference mask, for one class.

For a class c, a pixel is a false positive when the prediction says c and the reference does
not, a false negative when the reference says c and the prediction does not; pixels where either
raster is nodata (or the reference is the ignore value) stay transparent. Written once per
(prediction, reference, class) beside the prediction, as a tiled uint8 GeoTIFF on its grid, read
back by the tile server or the overlay renderer like any class raster.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import rasterio

from rsseg.constants import IGNORE_INDEX
from rsseg.inference.scoring import check_same_grid
from rsseg.io import atomic_path
from rsseg.viewer.files import file_stamp, open_geotiff

AGREE, FALSE_POSITIVE, FALSE_NEGATIVE = 0, 1, 2
#: colours of the error raster's values (agreement is hidden on the map)
ERROR_CLASSES = ["agree", "false positive", "false negative"]
ERROR_COLORS = ["#000000", "#ff8c00", "#00bfff"]
_BLOCK = 1024


def error_values(pred: np.ndarray, ref: np.ndarray, class_id: int, ref_nodata: float | None = None) -> np.ndarray:
    """[H, W] class ids of prediction and reference -> uint8 AGREE / FALSE_POSITIVE / FALSE_NEGATIVE, 255 = no data."""
    out = np.full(pred.shape, AGREE, np.uint8)
    out[(pred == class_id) & (ref != class_id)] = FALSE_POSITIVE
    out[(pred != class_id) & (ref == class_id)] = FALSE_NEGATIVE
    skip = (pred == IGNORE_INDEX) | (ref == IGNORE_INDEX)
    if ref_nodata is not None and not np.isnan(ref_nodata):
        skip |= ref == ref_nodata
    out[skip] = IGNORE_INDEX
    return out


def error_raster(classes_tif: str | Path, reference: str | Path, class_id: int) -> Path:
    """Write (once) and return the error raster of ``class_id`` beside ``classes_tif``."""
    key = hashlib.sha256(json.dumps([file_stamp(classes_tif), file_stamp(reference), class_id]).encode()).hexdigest()[:16]
    target = Path(classes_tif).parent / f"errors-{key}.tif"
    if target.is_file():
        return target
    with open_geotiff(classes_tif) as p, open_geotiff(reference) as r:
        check_same_grid(p, r, ref_name="reference")
        profile = p.profile | {"nodata": IGNORE_INDEX, "compress": "deflate", "tiled": True,
                               "blockxsize": 256, "blockysize": 256, "count": 1, "dtype": "uint8"}
        profile.pop("photometric", None)
        with atomic_path(target) as tmp, rasterio.open(tmp, "w", **profile) as dst:
            for row in range(0, p.height, _BLOCK):
                win = rasterio.windows.Window(0, row, p.width, min(_BLOCK, p.height - row))
                dst.write(error_values(p.read(1, window=win), r.read(1, window=win), class_id, r.nodata), 1, window=win)
            dst.update_tags(RSSEG_PRODUCT="errors", CLASS_NAMES=",".join(ERROR_CLASSES))
    return target
