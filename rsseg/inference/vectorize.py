"""Class raster -> polygons per class, window by window, dissolved across window borders.

``rasterio.features.shapes`` traces each window (4-connected regions, pixel coordinates so the
dissolve works on exact integer vertices). A polygon that does not touch an inner window border
is already final; the others are kept per class and unioned at the end, which rejoins regions
cut by the windows. Polygons are then simplified (``simplify`` metres, converted to pixels with
the pixel size at the raster's centre; per-polygon Douglas-Peucker, so neighbouring polygons may
no longer share edges exactly), moved to the raster's CRS, given geodesic areas
(:mod:`rsseg.inference.areas`), filtered by ``min_area`` (m^2; by default polygons under
:data:`MIN_PIXELS` pixels go, measured before simplification) and written with pyogrio.

Only the chosen ``classes`` are traced (:func:`default_vector_classes`: all but the background).
Every layer is named after its output file; GeoJSON follows RFC 7946 (WGS 84 longitude/latitude,
no ``crs`` member, counter-clockwise exterior rings).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.features import shapes
from rasterio.windows import Window

from rsseg.constants import IGNORE_INDEX as NODATA  # class rasters' nodata = the ignore value
from rsseg.errors import ConfigError
from rsseg.inference.areas import AreaModel
from rsseg.io import Staging, open_raster

if TYPE_CHECKING:  # geopandas (+ pandas) costs ~100 MB of RSS: imported only when polygons are made
    import geopandas as gpd

#: default smallest polygon, in pixels of the class raster: drops one-pixel speckle and slivers
MIN_PIXELS = 4
#: class names taken for "no class of interest" when choosing the default polygon classes
BACKGROUND_NAMES = ("background", "no-data", "nodata", "unlabeled", "unlabelled")

DRIVERS = {".gpkg": "GPKG", ".shp": "ESRI Shapefile", ".geojson": "GeoJSON", ".json": "GeoJSON"}
SHAPEFILE_PARTS = (".shx", ".dbf", ".prj", ".cpg", ".shp")  # .shp last: it appears only when the rest is there


def vector_driver(path: str | Path) -> str:
    """OGR driver for an output path, from its extension."""
    ext = Path(path).suffix.lower()
    if ext not in DRIVERS:
        raise ConfigError(f"unsupported vector format {ext or '(none)'} for {path}; use .gpkg, .shp or .geojson")
    return DRIVERS[ext]


def default_vector_classes(class_names: Sequence[str], dataset: str | None = None) -> list[int]:
    """Class ids to polygonise by default: every class but the background.

    The background is each class named like one (:data:`BACKGROUND_NAMES`, e.g. LoveDA's
    ``background``), else the classes the ``dataset`` spec leaves out of the mean scores (ISPRS
    clutter), else the first class (class 0 of a user's folder). A single-class model keeps it.
    """
    named = [i for i, n in enumerate(class_names) if n.strip().lower() in BACKGROUND_NAMES]
    if not named and dataset:
        from rsseg.data.datasets import dataset_names, get_dataset

        if dataset in dataset_names():
            named = [i for i, n in enumerate(class_names) if n in get_dataset(dataset).exclude]
    background = set(named or [0])
    keep = [i for i in range(len(class_names)) if i not in background]
    return keep or list(range(len(class_names)))


def parse_vector_classes(value: str | Sequence[str | int], class_names: Sequence[str],
                         what: str = "vector class") -> list[int]:
    """Class ids from names or ids (``"building,road"``, ``"1,2"`` or a list), in class order; an
    unknown one is a :class:`~rsseg.errors.ConfigError` naming it as a ``what`` and listing the model's classes."""
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    lower = {n.lower(): i for i, n in enumerate(class_names)}
    ids = set()
    for item in items:
        if isinstance(item, int) or str(item).isdigit():
            key = int(item) if 0 <= int(item) < len(class_names) else None
        else:
            key = lower.get(str(item).lower())
        if key is None:
            raise ConfigError(f"unknown {what} {item!r}; the model's classes are "
                              + ", ".join(f"{i}={n}" for i, n in enumerate(class_names)))
        ids.add(key)
    return sorted(ids)


def _trace(src: rasterio.DatasetReader, window_size: int,
           classes: Collection[int] | None = None) -> tuple[list, list, dict[int, list]]:
    """Polygons in pixel coordinates: (final geoms, their classes, {class: border pieces})."""
    done, done_cls, border = [], [], {}
    for y0 in range(0, src.height, window_size):
        for x0 in range(0, src.width, window_size):
            win = Window(x0, y0, min(window_size, src.width - x0), min(window_size, src.height - y0))
            data = src.read(1, window=win)
            valid = data != NODATA if classes is None else np.isin(data, list(classes))
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


def polygonize(class_raster_path: str | Path, class_names: list[str], simplify: float = 0.0,
               min_area: float | None = None, window_size: int = 2048,
               classes: Collection[int] | None = None) -> gpd.GeoDataFrame:
    """Polygons of a class raster as a GeoDataFrame (class_id, class_name, area_m2) in its CRS.

    ``classes``: class ids to trace (default: all). ``min_area``: smallest polygon in m^2
    (default: :data:`MIN_PIXELS` pixels; 0 keeps every polygon).
    """
    if window_size < 1:
        raise ConfigError(f"window_size must be positive (got {window_size})")
    if min_area is not None and min_area < 0:
        raise ConfigError(f"the minimum polygon area must be 0 or more square metres (got {min_area})")
    with open_raster(class_raster_path, "class") as src:
        geoms, classes, border = _trace(src, window_size, classes)
        for value, pieces in sorted(border.items()):
            merged = shapely.get_parts(shapely.union_all(pieces))
            geoms.extend(merged)
            classes.extend([value] * len(merged))
        areas = AreaModel(src.transform, src.crs, src.width, src.height)
        geoms = np.asarray(geoms, dtype=object)
        pixels = shapely.area(geoms) if len(geoms) else np.zeros(0)  # exact pixel counts: still in pixel space
        if simplify > 0 and len(geoms):
            geoms = shapely.simplify(geoms, simplify / areas.pixel_size_m(), preserve_topology=True)
        t = src.transform
        geoms = shapely.transform(geoms, lambda xy: np.stack([t.a * xy[:, 0] + t.b * xy[:, 1] + t.c,
                                                               t.d * xy[:, 0] + t.e * xy[:, 1] + t.f], 1))
        area = areas.polygon_areas(geoms)
        crs = src.crs
    classes = np.asarray(classes, dtype=np.int64)
    keep = pixels >= MIN_PIXELS if min_area is None else area >= min_area
    names = np.array(list(class_names) + ["?"], dtype=object)
    import geopandas as gpd

    return gpd.GeoDataFrame(
        {"class_id": classes[keep].astype(np.int32),
         "class_name": names[np.minimum(classes[keep], len(class_names))] if keep.any() else np.array([], object),
         "area_m2": area[keep]},
        geometry=list(geoms[keep]), crs=crs)


def style_path(out_path: str | Path) -> Path | None:
    """Where the QGIS style of a vector output goes: ``<stem>.qml`` beside a shapefile or GeoJSON
    (QGIS loads it as the default style); ``None`` for a GeoPackage, which keeps it inside
    (its ``layer_styles`` table)."""
    out_path = Path(out_path)
    return None if vector_driver(out_path) == "GPKG" else out_path.with_suffix(".qml")


def _gpkg_style(path: Path, layer: str, qml: str) -> None:
    """Store ``qml`` as the default QGIS style of ``layer`` in the GeoPackage's ``layer_styles``
    table (QGIS's own schema for styles kept in a GeoPackage). QGIS applies it only when the row
    names the layer's geometry column as OGR reports it (GDAL calls it ``geom``, geopandas
    ``geometry``), so the column is read back from the file written.
    """
    import pandas as pd
    import pyogrio

    column = pyogrio.read_info(path, layer=layer)["geometry_name"]
    row = {"f_table_catalog": "", "f_table_schema": "", "f_table_name": layer, "f_geometry_column": column,
           "styleName": layer, "styleQML": qml, "styleSLD": "", "useAsDefault": True,
           "description": "rsseg class colours", "owner": "", "ui": "", "update_time": pd.Timestamp.now(tz="UTC")}
    pyogrio.write_dataframe(pd.DataFrame([row]), path, layer="layer_styles", driver="GPKG", append=True)


def write_vector(gdf: gpd.GeoDataFrame, out_path: str | Path, style: str | None = None,
                 stage: Staging | None = None) -> Path:
    """Write ``gdf`` by extension (GPKG/shapefile/GeoJSON) atomically, the layer named after the
    file; a shapefile's parts are written in a temporary folder beside the target and moved in
    together, ``.shp`` last. GeoJSON is reprojected to WGS 84 and written per RFC 7946 (a raster
    without a CRS keeps its pixel-grid coordinates, which no standard can describe). ``style``:
    QGIS QML stored with the layer (:func:`style_path`). With ``stage`` the files stay staged for
    the caller's :meth:`~rsseg.io.Staging.commit` (all products at once)."""
    out_path = Path(out_path)
    driver = vector_driver(out_path)
    layer = out_path.stem
    sidecar = style_path(out_path) if style is not None else None
    own = stage is None
    stage = Staging() if own else stage
    try:
        if driver != "ESRI Shapefile":
            options = {}
            if driver == "GeoJSON" and gdf.crs is not None:
                gdf, options = gdf.to_crs(4326), {"RFC7946": "YES"}
            tmp = stage.path(out_path)
            gdf.to_file(tmp, driver=driver, engine="pyogrio", layer=layer, **options)
            if style is not None and driver == "GPKG":
                _gpkg_style(tmp, layer, style)
            if sidecar is not None:
                stage.path(sidecar).write_text(style, encoding="utf-8")
        else:
            tmp = stage.folder(out_path) / out_path.name
            gdf.to_file(tmp, driver=driver, engine="pyogrio", encoding="UTF-8")
            if sidecar is not None:
                tmp.with_suffix(".qml").write_text(style, encoding="utf-8")
            for ext in (".qml", *SHAPEFILE_PARTS) if sidecar is not None else SHAPEFILE_PARTS:
                part, target = tmp.with_suffix(ext), out_path.with_suffix(ext)  # .shp last
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
              min_area: float | None = None, window_size: int = 2048, classes: Collection[int] | None = None,
              style: str | None = None) -> int:
    """Polygonise a class raster (uint8 ids, 255 nodata) to ``out_path``; returns the polygon count.

    See the module docstring and :func:`polygonize`; the raster is read ``window_size`` x
    ``window_size`` at a time. ``style``: QGIS QML kept with the layer (:func:`write_vector`).
    """
    gdf = polygonize(class_raster_path, class_names, simplify=simplify, min_area=min_area, window_size=window_size,
                     classes=classes)
    write_vector(gdf, out_path, style=style)
    return len(gdf)
