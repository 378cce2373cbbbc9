"""Vector references: polygons with a class (GeoPackage, GeoJSON, shapefile, FlatGeobuf) scored
like a reference mask, rasterised on the prediction's grid.

Analysts hold ground truth as polygons (OpenStreetMap buildings, a survey layer), not as a raster
aligned with every prediction. :class:`VectorReference` reads the features that reach the raster's
bounds (a bounding-box read, so a country-wide layer costs only what overlaps), reprojects them to
the raster's CRS and rasterises them band by band on request with the rule GDAL's
``gdal_rasterize`` uses by default (a pixel belongs to a polygon when its centre is inside;
``all_touched=False``), later features drawn over earlier ones. It reads like a rasterio dataset
(``read(1, window=...)``, ``nodata``, ``close``), so every scoring path takes it where it takes a
reference raster (:func:`rsseg.inference.scoring.open_reference`), and it hands out its polygons
for the per-object scores (:meth:`VectorReference.objects`).

How features become classes (:class:`VectorOptions`): the field ``attribute`` holds a class name
(any case) or a class id, by default the field ``class_name`` when the layer has one (what
``rsseg predict --vector`` writes); or every feature is ``label_class`` (a layer of building
footprints without a class field). Pixels no feature covers are ``background``: by default the
class named like a background (``background``, ``no-data``...), or ``ignore`` (not scored).
A feature whose class field is empty is not drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from rasterio.crs import CRS
from rasterio.features import rasterize
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds
from rasterio.windows import transform as window_transform

from rsseg.constants import IGNORE_INDEX
from rsseg.errors import ConfigError, InputNotFoundError, InputRasterError, LabelError
from rsseg.inference.vectorize import background_named

#: file name endings read as vector references (a ``.json`` stays a STAC item, as for every raster)
VECTOR_SUFFIXES = (".gpkg", ".geojson", ".shp", ".fgb")
#: ``--background`` value for "pixels no feature covers are not scored"
IGNORE = "ignore"
#: class values listed in an error message
_SHOWN = 10


@dataclass(frozen=True)
class VectorOptions:
    """How a vector reference's features become classes (the ``--attribute``, ``--class``,
    ``--background`` and ``--layer`` options); see the module docstring."""

    attribute: str | None = None
    label_class: str | None = None
    background: str | None = None
    layer: str | None = None

    def flags(self) -> list[str]:
        """The options given, as the command line spells them."""
        names = {"attribute": "--attribute", "label_class": "--class", "background": "--background", "layer": "--layer"}
        return [flag for key, flag in names.items() if getattr(self, key) is not None]


def is_vector_reference(path: str | Path) -> bool:
    """Whether ``path`` names a vector file (:data:`VECTOR_SUFFIXES`) rather than a raster."""
    return Path(str(path)).suffix.lower() in VECTOR_SUFFIXES


def _class_id(value: Any, lookup: dict[str, int], k: int) -> int | None:
    """The class id of one attribute value: a class name (any case) or a whole number 0..k-1."""
    if isinstance(value, str):
        if value.strip().lower() in lookup:
            return lookup[value.strip().lower()]
        text = value.strip()
        if not text.isdigit():
            return None
        value = int(text)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() and 0 <= number < k else None


def _named_class(value: str, class_names: list[str], flag: str, path: str | Path) -> int:
    found = _class_id(value, {n.lower(): i for i, n in enumerate(class_names)}, len(class_names))
    if found is None:
        raise ConfigError(f"{flag} {value!r} is not a class of the prediction scored against {path}; its classes: "
                          + ", ".join(f"{i}={n}" for i, n in enumerate(class_names)))
    return found


def _background(options: VectorOptions, class_names: list[str], path: str | Path) -> int:
    if options.background is not None:
        if options.background.strip().lower() == IGNORE:
            return IGNORE_INDEX
        return _named_class(options.background, class_names, "--background", path)
    named = background_named(class_names)
    if len(named) != 1:
        raise ConfigError(f"which class are the pixels no feature of {path} covers? Name it with --background NAME "
                          f"(one of {', '.join(class_names)}), or pass --background {IGNORE} to score only the "
                          "pixels under its features")
    return named[0]


def _layer(path: str | Path, layer: str | None) -> str:
    import pyogrio

    try:
        layers = pyogrio.list_layers(str(path))
    except Exception as exc:  # pyogrio raises DataSourceError and friends for unreadable files
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputRasterError(f"cannot read vector reference {path}: {first} (expected a GeoPackage, GeoJSON, "
                               "shapefile or FlatGeobuf with polygons)") from None
    names = [str(name) for name, _ in layers]
    with_geometry = [str(name) for name, geometry in layers if geometry is not None]
    if layer is not None:
        if layer not in names:
            raise InputRasterError(f"vector reference {path} has no layer {layer!r}; its layers: {', '.join(names)}")
        return layer
    if len(with_geometry) != 1:
        listed = ", ".join(with_geometry) or "none with geometries"
        raise InputRasterError(f"vector reference {path} holds {len(with_geometry)} layers with geometries ({listed}); "
                               "name the one to score against with --layer NAME")
    return with_geometry[0]


class VectorReference:
    """A vector reference on the grid of ``like`` (a raster open for reading), for ``class_names``.

    Refused with one line each: an unreadable file, several layers and no ``layer``, a layer or
    raster without a CRS, a missing class field, class values that are no class (all listed with the
    classes known), features that are not polygons.
    """

    #: the rasterised reference has no nodata value: uncovered pixels are the background (or 255, ignored)
    nodata = None

    def __init__(self, path: str | Path, like: rasterio.DatasetReader, class_names: list[str],
                 options: VectorOptions | None = None, like_name: str = "prediction") -> None:
        import pyogrio

        options = options or VectorOptions()
        self.name = str(path)
        if not Path(path).exists():
            raise InputNotFoundError(f"vector reference not found: {path}")
        if options.attribute is not None and options.label_class is not None:
            raise ConfigError("give --attribute (the field holding each feature's class) or --class (one class for "
                              "every feature), not both")
        self.fill = _background(options, class_names, path)
        fixed = None if options.label_class is None else _named_class(options.label_class, class_names, "--class", path)
        layer = _layer(path, options.layer)
        info = pyogrio.read_info(str(path), layer=layer)
        if info["crs"] is None:
            raise InputRasterError(f"vector reference {path} (layer {layer!r}) has no CRS; save it with one "
                                   "(a shapefile needs its .prj)")
        if like.crs is None:
            raise InputRasterError(f"the {like_name} {like.name} has no CRS, so the vector reference {path} cannot be "
                                   "placed on its pixels; georeference it, or score against a raster on its grid")
        fields = [str(f) for f in info["fields"]]
        attribute = None
        if fixed is None:
            attribute = options.attribute or ("class_name" if "class_name" in fields else None)
            if attribute is None or attribute not in fields:
                what = f"no field {attribute!r}" if attribute else "no field 'class_name'"
                raise InputRasterError(f"vector reference {path} (layer {layer!r}) has {what}; name the field holding "
                                       f"each feature's class with --attribute FIELD (its fields: "
                                       f"{', '.join(fields) or 'none'}) or give every feature one class with --class NAME")
        bbox = transform_bounds(like.crs, info["crs"], *like.bounds, densify_pts=21)
        df = pyogrio.read_dataframe(str(path), layer=layer, columns=[attribute] if attribute else [], bbox=bbox)
        df = df[~(df.geometry.isna() | df.geometry.is_empty)]
        if CRS.from_user_input(df.crs) != like.crs:
            df = df.to_crs(like.crs.to_wkt())
        geoms = df.geometry.to_numpy()
        polygonal = np.isin(shapely.get_type_id(geoms), (3, 6))  # Polygon, MultiPolygon
        if not polygonal.all():
            kinds = sorted({g.geom_type for g in geoms[~polygonal]})
            raise InputRasterError(f"vector reference {path} (layer {layer!r}) holds {int((~polygonal).sum())} "
                                   f"{'/'.join(kinds)} feature(s) over the {like_name}; only polygons cover pixels: "
                                   "keep the polygons (e.g. ogr2ogr -nlt MULTIPOLYGON -where ...)")
        if fixed is not None:
            values = np.full(len(geoms), fixed, dtype=np.int64)
        else:
            values = self._class_ids(df[attribute], class_names, attribute, path)
        drawn = values >= 0
        self.geoms, self.values = geoms[drawn], values[drawn].astype(np.uint8)
        self.tree = shapely.STRtree(self.geoms)
        self.transform, self.width, self.height = like.transform, like.width, like.height
        self.bounds = like.bounds
        self.summary = {"path": self.name, "layer": layer, "attribute": attribute,
                        "class": None if fixed is None else class_names[fixed],
                        "background": IGNORE if self.fill == IGNORE_INDEX else class_names[self.fill],
                        "features": int(drawn.sum())}

    @staticmethod
    def _class_ids(column: Any, class_names: list[str], attribute: str, path: str | Path) -> np.ndarray:
        """Class id per feature, -1 where the field is empty (not drawn); values that are no class refused."""
        lookup = {n.lower(): i for i, n in enumerate(class_names)}
        out = np.full(len(column), -1, dtype=np.int64)
        found = list(column.dropna().unique())
        unknown = []
        for value in found:
            plain = value.item() if hasattr(value, "item") else value
            cid = _class_id(plain, lookup, len(class_names))
            if cid is None:
                unknown.append(plain)
            else:
                out[(column == value).to_numpy()] = cid
        if unknown:
            shown = ", ".join(repr(v) for v in unknown[:_SHOWN]) + (f" and {len(unknown) - _SHOWN} more"
                                                                    if len(unknown) > _SHOWN else "")
            raise LabelError(f"vector reference {path}: field {attribute!r} holds {shown}, which name no class of the "
                             "prediction (" + ", ".join(f"{i}={n}" for i, n in enumerate(class_names)) + "); "
                             "recode those features or name another field with --attribute")
        return out

    def read(self, band: int = 1, window: Window | None = None) -> np.ndarray:
        """Class ids [h, w] uint8 of ``window`` (default the whole grid), rasterised now."""
        if band != 1:
            raise ValueError(f"a rasterised vector reference has one band, not band {band}")
        window = window if window is not None else Window(0, 0, self.width, self.height)
        shape = (int(window.height), int(window.width))
        hits = np.sort(self.tree.query(shapely.box(*window_bounds(window, self.transform))))
        if not len(hits):
            return np.full(shape, self.fill, dtype=np.uint8)
        return rasterize(zip(self.geoms[hits], self.values[hits].tolist()), out_shape=shape, fill=self.fill,
                         transform=window_transform(window, self.transform), all_touched=False,
                         dtype="uint8")

    def objects(self, class_id: int) -> np.ndarray:
        """The polygons of ``class_id`` cut to the raster's bounds (the part that is scored)."""
        geoms = self.geoms[self.values == class_id]
        if not len(geoms):
            return geoms
        cut = shapely.intersection(shapely.make_valid(geoms), shapely.box(*self.bounds))
        return cut[shapely.area(cut) > 0]

    def close(self) -> None:
        """Nothing to release (the features are in memory); here so it reads like a raster."""

    def __enter__(self) -> VectorReference:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
