"""Predict inside a drawn area of interest only: the input cut to the area's window.

The analyst draws a rectangle or polygon on the map (folium's Draw plugin, GeoJSON in WGS84).
The area is transformed to the raster's CRS, its bounding window is cut from the input into a
small GeoTIFF (profile copied and amended, the window's transform), pixels outside a polygon are
masked, and that file goes through the usual :func:`~rsseg.viewer.session.run_prediction`: the
model sees only the window, and the class COG, polygons, areas and cache work unchanged.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.features import geometry_mask
from rasterio.warp import transform_geom
from rasterio.windows import Window, from_bounds
from shapely.geometry import shape

from rsseg.errors import ConfigError, InputRasterError
from rsseg.io import atomic_path
from rsseg.viewer.files import file_stamp, open_geotiff

#: a drawn area larger than this many pixels is refused (predict the whole raster instead)
MAX_AOI_PX = 64_000_000


def area_window(raster: str | Path, geometry: dict[str, Any]) -> Window:
    """The pixel window of ``raster`` covering ``geometry`` (GeoJSON in EPSG:4326), clipped to the raster."""
    with open_geotiff(raster) as src:
        if src.crs is None:
            raise InputRasterError(f"{Path(raster).name} has no CRS, so a drawn area cannot be placed on it")
        win = from_bounds(*shape(transform_geom("EPSG:4326", src.crs, geometry)).bounds, transform=src.transform)
        col0, row0 = max(0, int(np.floor(win.col_off))), max(0, int(np.floor(win.row_off)))
        col1 = min(src.width, int(np.ceil(win.col_off + win.width)))
        row1 = min(src.height, int(np.ceil(win.row_off + win.height)))
    if col1 <= col0 or row1 <= row0:
        raise InputRasterError("the drawn area does not overlap the raster; draw it over the image")
    win = Window(col0, row0, col1 - col0, row1 - row0)
    if win.width * win.height > MAX_AOI_PX:
        raise InputRasterError(f"the drawn area is {win.width}x{win.height} px; draw a smaller one (at most {MAX_AOI_PX:,} px) "
                         "or predict the whole raster")
    return win


def crop_to_area(raster: str | Path, geometry: dict[str, Any], out_dir: str | Path) -> Path:
    """Cut ``raster`` to the window of ``geometry`` (pixels outside it masked) into ``out_dir``.

    The file name hashes the raster's stamp and the geometry, so the same drawing maps to the same
    crop (and the same cached prediction).
    """
    if geometry.get("type") == "Feature":
        geometry = geometry["geometry"]
    if geometry.get("type") not in ("Polygon", "MultiPolygon"):
        raise ConfigError(f"draw a rectangle or polygon as the area of interest (got a {geometry.get('type')})")
    key = hashlib.sha256(json.dumps([file_stamp(raster), geometry], sort_keys=True).encode()).hexdigest()[:16]
    target = Path(out_dir) / f"{Path(raster).stem}-area-{key}.tif"
    if target.is_file():
        return target
    win = area_window(raster, geometry)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open_geotiff(raster) as src:
        transform = src.window_transform(win)
        inside = ~geometry_mask([transform_geom("EPSG:4326", src.crs, geometry)], (win.height, win.width), transform,
                                all_touched=True)
        mask = (src.dataset_mask(window=win) > 0) & inside
        profile = src.profile | {"driver": "GTiff", "width": win.width, "height": win.height, "transform": transform,
                                 "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate"}
        if str(profile.get("photometric", "")).upper() == "YCBCR":
            del profile["photometric"]  # YCbCr needs JPEG compression; the crop is deflated
        with atomic_path(target) as tmp, rasterio.open(tmp, "w", **profile) as dst:
            dst.write(src.read(window=win))
            dst.write_mask(mask.astype(np.uint8) * 255)
    return target

