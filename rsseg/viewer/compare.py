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
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio

from rsseg.config import is_hex_color
from rsseg.constants import IGNORE_INDEX
from rsseg.data.raster import color_distance
from rsseg.inference.scoring import check_same_grid
from rsseg.io import atomic_path
from rsseg.viewer.files import file_stamp, open_geotiff

AGREE, FALSE_POSITIVE, FALSE_NEGATIVE = 0, 1, 2
#: names of the error raster's values (agreement is hidden on the map)
ERROR_CLASSES = ["agree", "false positive", "false negative"]
#: error colours to choose from, in order of preference: hues far from the usual land-cover palettes
ERROR_CANDIDATES = ("#ff00ff", "#00ffff", "#ffff00", "#7f00ff", "#00ff7f", "#ff007f", "#007fff", "#ffffff")
_AGREE_COLOR = "#000000"
_BLOCK = 1024


def error_colors(class_colors: Sequence[str]) -> list[str]:
    """Colours of the error raster's values (agree, false positive, false negative) beside a class
    map drawn in ``class_colors``.

    Each error colour is the candidate farthest (:func:`~rsseg.data.raster.color_distance`) from
    every class colour and from the other error colour, the earlier candidate on a tie: magenta and
    cyan unless the palette holds colours near them, so an error is never read as a class.
    """
    taken = [c for c in class_colors if is_hex_color(c)]
    chosen: list[str] = []
    for _ in (FALSE_POSITIVE, FALSE_NEGATIVE):
        nearest = {c: min((color_distance(c, o) for o in taken + chosen), default=255)
                   for c in ERROR_CANDIDATES if c not in chosen}
        chosen.append(max(nearest, key=nearest.__getitem__))
    return [_AGREE_COLOR, *chosen]


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
