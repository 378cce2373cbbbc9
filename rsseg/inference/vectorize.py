"""Class raster -> polygons per class, window by window, dissolved across window borders.

``rasterio.features.shapes`` traces each window (4-connected regions, pixel coordinates so the
dissolve works on exact integer vertices). A polygon that does not touch an inner window border
is already final; the others are kept per class and unioned at the end, which rejoins regions
cut by the windows. Polygons under the minimum area go (``min_area``: square metres or pixels,
:func:`parse_area`; by default :data:`MIN_AREA_M2`, never under :data:`MIN_PIXELS` pixels;
square metres become pixels with the pixel area at the raster's centre, and pixels are counted
exactly, before simplification). The rest are simplified as one coverage
(:func:`simplify_coverage`: edges shared by two polygons stay shared, including across window
borders, since it runs after the dissolve; ``simplify`` metres or pixels, :func:`parse_length`,
default :data:`SIMPLIFY_PX`), moved to the raster's CRS, given geodesic areas
(:mod:`rsseg.inference.areas`) and written with pyogrio.

Only the chosen ``classes`` are traced (:func:`default_vector_classes`: all but the background).
Every layer is named after its output file; GeoJSON follows RFC 7946 (WGS 84 longitude/latitude,
no ``crs`` member, counter-clockwise exterior rings).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.features import shapes
from rasterio.windows import Window

from rsseg.constants import IGNORE_INDEX as NODATA  # class rasters' nodata = the ignore value
from rsseg.errors import BackendUnavailableError, ConfigError
from rsseg.inference.areas import AreaModel
from rsseg.io import Staging, open_raster

if TYPE_CHECKING:  # geopandas (+ pandas) costs ~100 MB of RSS: imported only when polygons are made
    import geopandas as gpd

#: default smallest polygon, in square metres: smaller than any building, shed or field, so what is
#: under it is speckle or a sliver, whatever the pixel size (docs/outputs.md says how it was chosen)
MIN_AREA_M2 = 2.0
#: the default's pixel floor: where MIN_AREA_M2 is under a few pixels (coarse rasters), polygons
#: of fewer pixels than this still go (one-pixel speckle)
MIN_PIXELS = 4
#: default simplification tolerance, in pixels: enough to cut the one-pixel staircase corners of
#: traced outlines (coverage simplification removes corners whose triangle is under about
#: tolerance^2), too little to round a building's true corners
SIMPLIFY_PX = 1.0
#: building regularisation (optional ``regularize`` extra): the library's first simplification
#: (2-3 pixels, it advises) and the distance under which edges merge as parallel, in pixels; on
#: the Tanzania buildings these gave the outlines closest to the OpenStreetMap footprints
REGULARIZE_SIMPLIFY_PX, REGULARIZE_PARALLEL_PX = 2.0, 1.0
#: class names taken for "no class of interest" when choosing the default polygon classes
BACKGROUND_NAMES = ("background", "no-data", "nodata", "unlabeled", "unlabelled")


def background_named(class_names: Sequence[str]) -> list[int]:
    """Ids of the classes named like a background (:data:`BACKGROUND_NAMES`, any case)."""
    return [i for i, n in enumerate(class_names) if n.strip().lower() in BACKGROUND_NAMES]


DRIVERS = {".gpkg": "GPKG", ".shp": "ESRI Shapefile", ".geojson": "GeoJSON", ".json": "GeoJSON"}
SHAPEFILE_PARTS = (".shx", ".dbf", ".prj", ".cpg", ".shp")  # .shp last: it appears only when the rest is there


def vector_driver(path: str | Path) -> str:
    """OGR driver for an output path, from its extension."""
    ext = Path(path).suffix.lower()
    if ext not in DRIVERS:
        raise ConfigError(f"unsupported vector format {ext or '(none)'} for {path}; use .gpkg, .shp or .geojson")
    return DRIVERS[ext]


class Measure(NamedTuple):
    """A size with its unit: an area in ``m2`` or ``px`` (pixels), a length in ``m`` or ``px``."""

    value: float
    unit: str

    def __str__(self) -> str:
        return f"{self.value:g}{self.unit}"


#: accepted suffixes -> unit, and (example, meaning) pairs for the messages; a bare number is the first unit
_AREA = ({"m2": "m2", "m²": "m2", "px": "px"}, (("2m2", "square metres"), ("8px", "pixels")))
_LENGTH = ({"m": "m", "px": "px"}, (("0.1m", "metres"), ("1px", "pixels")))


def parse_area(value: str | float | Measure, name: str = "min_area") -> Measure:
    """An area from ``"2m2"``, ``"2 m²"``, ``"8px"`` (pixels) or a bare number (square metres);
    ``name`` is the option the one-line :class:`~rsseg.errors.ConfigError` names."""
    return _parse_measure(value, name, *_AREA)


def parse_length(value: str | float | Measure, name: str = "simplify") -> Measure:
    """A length from ``"0.1m"``, ``"1px"`` (pixels) or a bare number (metres); ``name`` as in
    :func:`parse_area`."""
    return _parse_measure(value, name, *_LENGTH)


def _parse_measure(value: str | float | Measure, name: str, units: dict[str, str],
                   examples: tuple[tuple[str, str], ...]) -> Measure:
    text = str(value).strip().lower().replace(" ", "")
    number, unit = text, next(iter(units.values()))
    for suffix in sorted(units, key=len, reverse=True):  # "m2" before "m"
        if text.endswith(suffix):
            number, unit = text[: -len(suffix)], units[suffix]
            break
    fix = "use e.g. " + " or ".join(f"{name} {ex} ({meaning})" for ex, meaning in examples)
    try:
        amount = float(number)
    except ValueError:
        units_text = ", ".join(sorted(set(units)))
        raise ConfigError(f"{name} {value!r} is not a number with a unit ({units_text}); {fix}") from None
    if not math.isfinite(amount):
        raise ConfigError(f"{name} {value} is not a finite number; {fix}")
    if amount < 0:
        raise ConfigError(f"{name} must be at least 0 (got {value}); {fix}")
    return Measure(amount, unit)


def min_area_pixels(min_area: str | float | Measure | None, pixel_area_m2: float) -> float:
    """The smallest polygon kept, in pixels of a raster whose pixels cover ``pixel_area_m2``:
    ``None`` is the default (:data:`MIN_AREA_M2`, at least :data:`MIN_PIXELS` pixels); a given
    value is taken as it is (``0`` keeps every polygon)."""
    if min_area is None:
        return max(float(MIN_PIXELS), MIN_AREA_M2 / pixel_area_m2)
    area = parse_area(min_area)
    return area.value if area.unit == "px" else area.value / pixel_area_m2


def simplify_pixels(simplify: str | float | Measure | None, pixel_size_m: float) -> float:
    """The simplification tolerance in pixels of side ``pixel_size_m``: ``None`` is the default
    (:data:`SIMPLIFY_PX`), ``0`` keeps the traced pixel outlines."""
    if simplify is None:
        return SIMPLIFY_PX
    length = parse_length(simplify)
    return length.value if length.unit == "px" else length.value / pixel_size_m


def simplify_coverage(geoms: np.ndarray, tolerance: float) -> np.ndarray:
    """Simplify polygons that tile one coverage (traced from one raster, in pixel coordinates)
    together, so an edge two polygons share stays shared: no gap, no overlap
    (``shapely.coverage_simplify``, a Visvalingam-Whyatt variant; ``tolerance`` in pixels, about
    the square root of the largest triangle cut off). Each polygon keeps at least a triangle."""
    if tolerance <= 0 or not len(geoms):
        return geoms
    return shapely.coverage_simplify(_match_shared_vertices(geoms), tolerance)


def _match_shared_vertices(geoms: np.ndarray) -> np.ndarray:
    """The same polygons (pixel coordinates: edges along rows and columns between integer,
    non-negative corners), with each vertex of any of them that lies inside an edge of another
    inserted into that edge.

    Traced outlines have a vertex only where they turn, so an edge one polygon shares with two
    neighbours lacks the vertex where those meet, and the coverage algorithm matches shared edges
    vertex by vertex. (A vertex at every pixel corner would do too, at 5x the simplification time
    on a busy map.)"""
    _, coords, (ring_offsets, geom_offsets) = shapely.to_ragged_array(geoms)
    xy = np.rint(coords).astype(np.int64)
    span = int(xy.max()) + 1
    points = np.unique(xy, axis=0)
    row_keys = np.sort(points[:, 1] * span + points[:, 0])  # along rows: y, then x
    col_keys = np.sort(points[:, 0] * span + points[:, 1])  # along columns: x, then y
    closing = np.zeros(len(xy), bool)
    closing[ring_offsets[1:] - 1] = True  # a ring's closing vertex starts no edge
    seg = np.flatnonzero(~closing)
    a, b = xy[seg], xy[seg + 1]
    horizontal, vertical = a[:, 1] == b[:, 1], a[:, 0] == b[:, 0]
    line = np.where(horizontal, a[:, 1], a[:, 0])  # the row or column the edge runs along
    m0, m1 = np.where(horizontal, a[:, 0], a[:, 1]), np.where(horizontal, b[:, 0], b[:, 1])
    lo_key, hi_key = line * span + np.minimum(m0, m1), line * span + np.maximum(m0, m1)
    lo = np.where(horizontal, np.searchsorted(row_keys, lo_key, "right"), np.searchsorted(col_keys, lo_key, "right"))
    hi = np.where(horizontal, np.searchsorted(row_keys, hi_key, "left"), np.searchsorted(col_keys, hi_key, "left"))
    n = np.where(horizontal | vertical, np.maximum(hi - lo, 0), 0)  # vertices strictly inside each edge
    if not n.any():
        return geoms
    total = np.ones(len(xy), np.int64)
    total[seg] += n
    first = np.concatenate([[0], np.cumsum(total)])  # where each old vertex lands; then the end
    out = np.empty((first[-1], 2), np.int64)
    out[first[:-1]] = xy
    j = np.repeat(np.arange(len(seg)), n)  # per inserted vertex: its edge and its rank along it
    k = np.arange(len(j)) - np.repeat(np.cumsum(n) - n, n)
    idx = np.where(m1[j] > m0[j], lo[j] + k, hi[j] - 1 - k)
    key = np.where(horizontal[j], row_keys[idx], col_keys[idx])
    major, minor = key // span, key % span
    out[first[seg[j]] + 1 + k] = np.where(horizontal[j, None], np.stack([minor, major], 1), np.stack([major, minor], 1))
    return shapely.from_ragged_array(shapely.GeometryType.POLYGON, out.astype(np.float64),
                                     (first[ring_offsets], geom_offsets))


def require_regularizer() -> None:
    """Refuse, in one line naming the install, when the optional building regulariser is missing."""
    try:
        import buildingregulariser  # noqa: F401
    except ImportError:
        raise BackendUnavailableError(
            "--regularize needs the buildingregulariser package; install it with pip install 'rsseg[regularize]' "
            "(or pip install buildingregulariser)") from None


def regularize_polygons(geoms: np.ndarray, crs: rasterio.crs.CRS | None, pixel_size_m: float,
                        pixel_units: float) -> tuple[np.ndarray, np.ndarray]:
    """Building footprints with right-angled outlines (buildingregulariser: edges snapped to each
    polygon's main direction, its perpendicular or 45 degrees; near-circles become circles), one
    polygon at a time from its traced pixel outline. ``geoms`` are in ``crs``; a pixel is
    ``pixel_units`` CRS units across (``pixel_size_m`` metres). Returns the outlines and, for each,
    the index of the polygon it came from (a self-intersecting outline may come back in pieces; one
    the library drops keeps its traced outline)."""
    require_regularizer()
    import geopandas as gpd
    from buildingregulariser import regularize_geodataframe

    frame = gpd.GeoDataFrame({"source": np.arange(len(geoms))}, geometry=list(geoms), crs=crs)
    unit = pixel_units
    if crs is not None and crs.is_geographic:  # degrees: right angles and tolerances hold in metres
        frame, unit = frame.to_crs(frame.estimate_utm_crs()), pixel_size_m
    # the library's advice: simplify by 2-3 pixels first; edges closer than a pixel merge as parallel
    # (num_cores=1: it would otherwise start a process pool from inside predict)
    out = regularize_geodataframe(frame, simplify_tolerance=REGULARIZE_SIMPLIFY_PX * unit,
                                  parallel_threshold=REGULARIZE_PARALLEL_PX * unit, num_cores=1)
    if crs is not None and crs.is_geographic:
        out = out.to_crs(crs)
    source = out["source"].to_numpy()
    lost = np.setdiff1d(np.arange(len(geoms)), source)
    shapes_out = np.concatenate([np.asarray(out.geometry.values, dtype=object), geoms[lost]])
    source = np.concatenate([source, lost])
    order = np.argsort(source, kind="stable")
    return shapes_out[order], source[order]


def default_vector_classes(class_names: Sequence[str], dataset: str | None = None) -> list[int]:
    """Class ids to polygonise by default: every class but the background.

    The background is each class named like one (:data:`BACKGROUND_NAMES`, e.g. LoveDA's
    ``background``), else the classes the ``dataset`` spec leaves out of the mean scores (ISPRS
    clutter), else the first class (class 0 of a user's folder). A single-class model keeps it.
    """
    named = background_named(class_names)
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


def polygonize(class_raster_path: str | Path, class_names: list[str], simplify: str | float | Measure | None = None,
               min_area: str | float | Measure | None = None, window_size: int = 2048,
               classes: Collection[int] | None = None, regularize: Collection[int] = ()) -> gpd.GeoDataFrame:
    """Polygons of a class raster as a GeoDataFrame (class_id, class_name, area_m2) in its CRS.

    ``classes``: class ids to trace (default: all). ``min_area``: the smallest polygon kept,
    ``"2m2"``, ``"8px"`` or a number of m^2 (:func:`min_area_pixels`; default
    :data:`MIN_AREA_M2`, at least :data:`MIN_PIXELS` pixels; 0 keeps every polygon).
    ``simplify``: the coverage simplification tolerance, ``"1px"``, ``"0.1m"`` or a number of
    metres (:func:`simplify_coverage`; default :data:`SIMPLIFY_PX` pixels; 0 keeps the pixel
    outlines). ``regularize``: class ids (building footprints) whose polygons get right-angled
    outlines instead (:func:`regularize_polygons`, the optional ``regularize`` extra; their edges
    with neighbours are then no longer shared). What was applied is in ``gdf.attrs["polygons"]``
    (``min_area_m2``, ``min_area_px``, ``simplify_m``, ``simplify_px``, ``regularized``: class names).
    """
    if window_size < 1:
        raise ConfigError(f"window_size must be positive (got {window_size})")
    # a bad value or a missing library is refused before the raster is read
    min_area = None if min_area is None else parse_area(min_area)
    simplify = None if simplify is None else parse_length(simplify)
    if regularize:
        require_regularizer()
    with open_raster(class_raster_path, "class") as src:
        geoms, found, border = _trace(src, window_size, classes)
        for value, pieces in sorted(border.items()):
            merged = shapely.get_parts(shapely.union_all(pieces))
            geoms.extend(merged)
            found.extend([value] * len(merged))
        areas = AreaModel(src.transform, src.crs, src.width, src.height)
        pixel_size = areas.pixel_size_m()
        min_px, tolerance = min_area_pixels(min_area, pixel_size**2), simplify_pixels(simplify, pixel_size)
        traced, found = np.asarray(geoms, dtype=object), np.asarray(found, dtype=np.int64)
        # exact pixel counts (still in pixel space, not yet simplified)
        keep = shapely.area(traced) >= min_px if len(traced) else np.zeros(0, bool)
        traced, found = traced[keep], found[keep]
        t, crs = src.transform, src.crs

        def to_crs(pixel_geoms: np.ndarray) -> np.ndarray:
            return shapely.transform(pixel_geoms, lambda xy: np.stack([t.a * xy[:, 0] + t.b * xy[:, 1] + t.c,
                                                                       t.d * xy[:, 0] + t.e * xy[:, 1] + t.f], 1))

        # after the dissolve, so edges shared across window borders are simplified once, alike on both sides
        geoms = to_crs(simplify_coverage(traced, tolerance))
        chosen = np.isin(found, list(regularize))
        if chosen.any():  # from the traced outlines: the library simplifies them its own way
            shaped, source = regularize_polygons(to_crs(traced[chosen]), crs, pixel_size,
                                                 math.sqrt(abs(t.determinant)))
            rows = np.concatenate([np.flatnonzero(~chosen), np.flatnonzero(chosen)[source]])
            order = np.argsort(rows, kind="stable")
            geoms, found = np.concatenate([geoms[~chosen], shaped])[order], found[rows[order]]
        area = areas.polygon_areas(geoms)
    names = np.array(list(class_names) + ["?"], dtype=object)
    import geopandas as gpd

    gdf = gpd.GeoDataFrame(
        {"class_id": found.astype(np.int32), "class_name": names[np.minimum(found, len(class_names))],
         "area_m2": area},
        geometry=list(geoms), crs=crs)
    gdf.attrs["polygons"] = {"min_area_m2": round(min_px * pixel_size**2, 6), "min_area_px": round(min_px, 3),
                             "simplify_m": round(tolerance * pixel_size, 6), "simplify_px": round(tolerance, 3),
                             "regularized": [str(names[min(i, len(class_names))]) for i in sorted(regularize)]}
    return gdf


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


def vectorize(class_raster_path: str | Path, out_path: str | Path, class_names: list[str],
              simplify: str | float | Measure | None = None, min_area: str | float | Measure | None = None,
              window_size: int = 2048, classes: Collection[int] | None = None, style: str | None = None) -> int:
    """Polygonise a class raster (uint8 ids, 255 nodata) to ``out_path``; returns the polygon count.

    See the module docstring and :func:`polygonize`; the raster is read ``window_size`` x
    ``window_size`` at a time. ``style``: QGIS QML kept with the layer (:func:`write_vector`).
    """
    gdf = polygonize(class_raster_path, class_names, simplify=simplify, min_area=min_area, window_size=window_size,
                     classes=classes)
    write_vector(gdf, out_path, style=style)
    return len(gdf)
