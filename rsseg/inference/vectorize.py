"""Class raster -> polygons per class, window by window, dissolved across window borders.

``rasterio.features.shapes`` traces each window (4-connected regions, pixel coordinates so the
dissolve works on exact integer vertices). A polygon that does not touch an inner window border
is already final; the others are kept per class and unioned at the end, which rejoins regions
cut by the windows. Polygons are then simplified (``simplify`` metres, converted to pixels with
the pixel size at the raster's centre; per-polygon Douglas-Peucker, so neighbouring polygons may
no longer share edges exactly), moved to the raster's CRS, given geodesic areas
(:mod:`rsseg.inference.areas`), filtered by ``min_area`` (m^2) and written with pyogrio.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.features import shapes
from rasterio.windows import Window

from rsseg.data.constants import IGNORE_INDEX as NODATA  # class rasters' nodata = the ignore value
from rsseg.errors import RsSegError
from rsseg.inference.areas import AreaModel
from rsseg.io import Staging, open_raster

if TYPE_CHECKING:  # geopandas (+ pandas) costs ~100 MB of RSS: imported only when polygons are made
    import geopandas as gpd

DRIVERS = {".gpkg": "GPKG", ".shp": "ESRI Shapefile", ".geojson": "GeoJSON", ".json": "GeoJSON"}
SHAPEFILE_PARTS = (".shx", ".dbf", ".prj", ".cpg", ".shp")  # .shp last: it appears only when the rest is there


def vector_driver(path: str | Path) -> str:
    """OGR driver for an output path, from its extension."""
    ext = Path(path).suffix.lower()
    if ext not in DRIVERS:
        raise RsSegError(f"unsupported vector format {ext or '(none)'} for {path}; use .gpkg, .shp or .geojson")
    return DRIVERS[ext]


def _trace(src: rasterio.DatasetReader, window_size: int) -> tuple[list, list, dict[int, list]]:
    """Polygons in pixel coordinates: (final geoms, their classes, {class: border pieces})."""
    done, done_cls, border = [], [], {}
    for y0 in range(0, src.height, window_size):
        for x0 in range(0, src.width, window_size):
            win = Window(x0, y0, min(window_size, src.width - x0), min(window_size, src.height - y0))
            data = src.read(1, window=win)
            valid = data != NODATA
            if not valid.any():
                continue
            inner = (x0 > 0, y0 > 0, x0 + win.width < src.width, y0 + win.height < src.height)
            for geom, value in shapes(data, mask=valid, connectivity=4, transform=Affine.translation(x0, y0)):
                poly = shapely.geometry.shape(geom)
                minx, miny, maxx, maxy = poly.bounds
                cut = ((inner[0] and minx == x0) or (inner[1] and miny == y0)
                       or (inner[2] and maxx == x0 + win.width) or (inner[3] and maxy == y0 + win.height))
                if cut:
                    border.setdefault(int(value), []).append(poly)
                else:
                    done.append(poly)
                    done_cls.append(int(value))
    return done, done_cls, border


def polygonize(class_raster_path: str | Path, class_names: list[str], simplify: float = 0.0, min_area: float = 0.0,
               window_size: int = 2048) -> gpd.GeoDataFrame:
    """Polygons of a class raster as a GeoDataFrame (class_id, class_name, area_m2) in its CRS."""
    if window_size < 1:
        raise RsSegError(f"window_size must be positive (got {window_size})")
    with open_raster(class_raster_path, "class") as src:
        geoms, classes, border = _trace(src, window_size)
        for value, pieces in sorted(border.items()):
            merged = shapely.get_parts(shapely.union_all(pieces))
            geoms.extend(merged)
            classes.extend([value] * len(merged))
        areas = AreaModel(src.transform, src.crs, src.width, src.height)
        geoms = np.asarray(geoms, dtype=object)
        if simplify > 0 and len(geoms):
            geoms = shapely.simplify(geoms, simplify / areas.pixel_size_m(), preserve_topology=True)
        t = src.transform
        geoms = shapely.transform(geoms, lambda xy: np.stack([t.a * xy[:, 0] + t.b * xy[:, 1] + t.c,
                                                               t.d * xy[:, 0] + t.e * xy[:, 1] + t.f], 1))
        area = areas.polygon_areas(geoms)
        crs = src.crs
    classes = np.asarray(classes, dtype=np.int64)
    keep = area >= min_area
    names = np.array(list(class_names) + ["?"], dtype=object)
    import geopandas as gpd

    return gpd.GeoDataFrame(
        {"class_id": classes[keep].astype(np.int32),
         "class_name": names[np.minimum(classes[keep], len(class_names))] if keep.any() else np.array([], object),
         "area_m2": area[keep]},
        geometry=list(geoms[keep]), crs=crs)


def write_vector(gdf: gpd.GeoDataFrame, out_path: str | Path, stage: Staging | None = None) -> Path:
    """Write ``gdf`` by extension (GPKG/shapefile/GeoJSON) atomically; a shapefile's parts are
    written in a temporary folder beside the target and moved in together. With ``stage`` the
    files stay staged for the caller's :meth:`~rsseg.io.Staging.commit` (all products at once)."""
    out_path = Path(out_path)
    driver = vector_driver(out_path)
    own = stage is None
    stage = Staging() if own else stage
    try:
        if driver != "ESRI Shapefile":
            tmp = stage.path(out_path)
            gdf.to_file(tmp, driver=driver, engine="pyogrio", layer=out_path.stem if driver == "GPKG" else None)
        else:
            tmp = stage.folder(out_path) / out_path.name
            gdf.to_file(tmp, driver=driver, engine="pyogrio", encoding="UTF-8")
            for ext in SHAPEFILE_PARTS:  # .shp last: it appears only when the rest is there
                part, target = tmp.with_suffix(ext), out_path.with_suffix(ext)
                if part.exists():
                    stage.add(part, target)
                else:
                    stage.remove_at_commit(target)  # a stale part from an older file would corrupt the new one
        if own:
            stage.commit()
    except BaseException:
        if own:
            stage.discard()
        raise
    return out_path


def vectorize(class_raster_path: str | Path, out_path: str | Path, class_names: list[str], simplify: float = 0.0,
              min_area: float = 0.0, window_size: int = 2048) -> int:
    """Polygonise a class raster (uint8 ids, 255 nodata) to ``out_path``; returns the polygon count.

    See the module docstring; the raster is read ``window_size`` x ``window_size`` at a time.
    """
    gdf = polygonize(class_raster_path, class_names, simplify=simplify, min_area=min_area, window_size=window_size)
    write_vector(gdf, out_path)
    return len(gdf)
