"""What the map shows: PNG overlays from overviews, the legend, polygons and point queries.

These overlays are the fallback of the full-resolution tiles (:mod:`~rsseg.viewer.tile_server`) when
rio-tiler is missing or the app is served beyond 127.0.0.1. A raster is read decimated so its long side is
at most ``max_px`` (GDAL serves such reads from the file's overviews when it has them), then
warped to Web Mercator, the projection Leaflet draws in: an ``ImageOverlay`` is stretched
linearly between two lat/lon corners in screen (Mercator) space, so an image on any other grid
(EPSG:4326 included) would drift off its true position away from the corners. Class rasters are
decimated and warped with nearest neighbour so every displayed pixel is a real class id.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.warp import calculate_default_transform, reproject
from rasterio.windows import Window

from rsseg.config import hex_rgb, is_hex_color
from rsseg.errors import InputRasterError
from rsseg.viewer.files import open_geotiff

MAX_DISPLAY_PX = 1024
WEB_MERCATOR = "EPSG:3857"
LEGEND_CLASS = "rsseg-legend"


@dataclass(frozen=True)
class Overlay:
    """An RGBA image (PNG or WebP bytes) in Web Mercator and its corners as
    ((south, west), (north, east)) in degrees."""

    data: bytes
    bounds: tuple[tuple[float, float], tuple[float, float]]
    width: int
    height: int
    mime: str = "image/png"

    def data_url(self) -> str:
        return f"data:{self.mime};base64," + base64.b64encode(self.data).decode("ascii")


def _encode(rgba: np.ndarray, fmt: str = "PNG") -> bytes:
    """RGBA [h, w, 4] uint8 -> PNG (lossless, for class colours) or WebP (lossy with alpha, for
    imagery: ~10x smaller than PNG, and the page re-sends it on every rerun)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba), mode="RGBA").save(buf, format=fmt, **({"quality": 80} if fmt == "WEBP" else {}))
    return buf.getvalue()


def _decimated_shape(width: int, height: int, max_px: int) -> tuple[int, int]:
    scale = max(1.0, max(width, height) / max_px)
    return max(1, round(height / scale)), max(1, round(width / scale))


def _warp(src: rasterio.DatasetReader, bands: list[int], max_px: int, resampling: Resampling) -> tuple[np.ndarray, np.ndarray, Affine]:
    """Read ``bands`` decimated and warp them to Web Mercator.

    Returns (data [B, h, w] in the source dtype, valid mask [h, w] bool, Mercator transform).
    """
    if src.crs is None:
        raise InputRasterError(f"{Path(src.name).name} has no coordinate reference system, so it cannot be placed on the map; "
                         "georeference it (e.g. gdal_translate -a_srs/-a_ullr) first")
    oh, ow = _decimated_shape(src.width, src.height, max_px)
    data = src.read(bands, out_shape=(len(bands), oh, ow), resampling=resampling)
    valid = src.dataset_mask(out_shape=(oh, ow), resampling=Resampling.nearest) > 0
    src_transform = src.transform @ Affine.scale(src.width / ow, src.height / oh)
    dst_transform, dw, dh = calculate_default_transform(src.crs, WEB_MERCATOR, ow, oh, *src.bounds)
    if max(dw, dh) > max_px:  # a warp can enlarge the grid a little; keep the browser payload capped
        f = max(dw, dh) / max_px
        dst_transform, dw, dh = dst_transform @ Affine.scale(f), max(1, int(dw / f)), max(1, int(dh / f))
    out = np.zeros((len(bands), dh, dw), dtype=data.dtype)
    for i in range(len(bands)):
        reproject(data[i], out[i], src_transform=src_transform, src_crs=src.crs, dst_transform=dst_transform,
                  dst_crs=WEB_MERCATOR, resampling=resampling)
    out_valid = np.zeros((dh, dw), dtype=np.uint8)
    # 2 marks "valid"; 0 stays wherever the source does not reach (outside its footprint)
    reproject(valid.astype(np.uint8) * 2, out_valid, src_transform=src_transform, src_crs=src.crs,
              dst_transform=dst_transform, dst_crs=WEB_MERCATOR, resampling=Resampling.nearest, src_nodata=0, dst_nodata=0)
    return out, out_valid == 2, dst_transform


def _latlon_bounds(transform: Affine, width: int, height: int) -> tuple[tuple[float, float], tuple[float, float]]:
    to_ll = Transformer.from_crs(WEB_MERCATOR, "EPSG:4326", always_xy=True)
    west, north = to_ll.transform(transform.c, transform.f)
    east, south = to_ll.transform(transform.c + transform.a * width, transform.f + transform.e * height)
    return (south, west), (north, east)


def render_classes(path: str | Path, colors: list[str], max_px: int = MAX_DISPLAY_PX, hidden: tuple[int, ...] = ()) -> Overlay:
    """Class raster (band 1 = class ids) -> palette-coloured RGBA overlay.

    Ids without a colour (the ignore value 255, nodata) and ``hidden`` ids are transparent.
    """
    with open_geotiff(path) as src:
        data, valid, transform = _warp(src, [1], max_px, Resampling.nearest)
        nodata = src.nodata
    ids = data[0].astype(np.int64)
    lut = np.zeros((256, 4), np.uint8)
    for i, c in enumerate(colors[:255]):
        lut[i] = (*hex_rgb(c), 255)
    rgba = lut[np.clip(ids, 0, 255)]
    rgba[~valid | (ids < 0) | (ids > 255) | np.isin(ids, hidden)] = 0
    if nodata is not None and not math.isnan(nodata):
        rgba[ids == int(nodata)] = 0
    h, w = ids.shape
    return Overlay(_encode(rgba), _latlon_bounds(transform, w, h), w, h)


def _stretch(band: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Any dtype -> uint8 with a 2-98 % percentile stretch (uint8 imagery is shown as is)."""
    if band.dtype == np.uint8:
        return band
    vals = band[valid & np.isfinite(band)] if np.issubdtype(band.dtype, np.floating) else band[valid]
    if vals.size == 0:
        return np.zeros(band.shape, np.uint8)
    lo, hi = np.percentile(vals, [2, 98])
    scaled = (band.astype(np.float64) - lo) / max(hi - lo, 1e-12)
    return (np.clip(np.nan_to_num(scaled), 0, 1) * 255).astype(np.uint8)


def render_image(path: str | Path, max_px: int = MAX_DISPLAY_PX) -> Overlay:
    """Input raster -> WebP overlay of its first three bands (one band: grey); nodata transparent."""
    with open_geotiff(path) as src:
        bands = [1, 2, 3] if src.count >= 3 else [1]
        data, valid, transform = _warp(src, bands, max_px, Resampling.average)
    rgb = np.stack([_stretch(b, valid) for b in data], -1)
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, -1)
    rgba = np.concatenate([rgb, (valid * 255).astype(np.uint8)[..., None]], -1)
    h, w = valid.shape
    return Overlay(_encode(rgba, "WEBP"), _latlon_bounds(transform, w, h), w, h, mime="image/webp")


@dataclass(frozen=True)
class LegendGroup:
    """Legend rows that describe the map layers named in ``layers``: shown while one of those layers
    is on (no layers: always)."""

    title: str
    names: Sequence[str]
    colors: Sequence[str]
    layers: tuple[str, ...] = ()

    def shown(self, visible: Collection[str] | None) -> bool:
        return visible is None or not self.layers or any(layer in visible for layer in self.layers)


def legend_html(groups: Sequence[LegendGroup], visible: Collection[str] | None = None) -> str:
    """A categorical legend as one HTML element (``div#rsseg-legend.rsseg-legend``), one
    ``div.rsseg-legend-group`` per group with its layer names (JSON) in ``data-layers``.

    ``visible``: the layers on when the map opens (None: all); a group none of whose layers is on
    starts hidden, and the map keeps the groups in step with its layer control
    (:func:`~rsseg.viewer.mapview.build_map`). Class names come from an untrusted checkpoint, so
    they are escaped; colours that are not ``#rrggbb`` are drawn grey.
    """
    sections = []
    for group in groups:
        rows = "".join(
            f'<div class="{LEGEND_CLASS}-item" style="display:flex;align-items:center;gap:6px;margin:2px 0">'
            f'<span class="{LEGEND_CLASS}-swatch" style="display:inline-block;width:14px;height:14px;border:1px solid #555;'
            f'background:{c if is_hex_color(c) else "#808080"}"></span>{html.escape(name)}</div>'
            for name, c in zip(group.names, group.colors, strict=False)
        )
        hide = "" if group.shown(visible) else ' style="display:none"'
        sections.append(f'<div class="{LEGEND_CLASS}-group" data-layers="{html.escape(json.dumps(list(group.layers)))}"{hide}>'
                        f'<b>{html.escape(group.title)}</b>{rows}</div>')
    hide = "" if any(g.shown(visible) for g in groups) else "display:none;"
    return (
        f'<div id="{LEGEND_CLASS}" class="{LEGEND_CLASS}" style="{hide}position:fixed;bottom:28px;right:10px;z-index:1000;'
        'background:rgba(255,255,255,0.9);padding:6px 10px;border-radius:4px;font:12px sans-serif;'
        f'box-shadow:0 1px 4px rgba(0,0,0,0.4)">{"".join(sections)}</div>'
    )


@dataclass(frozen=True)
class PointValue:
    """The class raster's value under a clicked point (``value`` is None on nodata)."""

    row: int
    col: int
    value: int | None


def query_point(path: str | Path, lat: float, lon: float) -> PointValue | None:
    """Value of band 1 at a WGS84 point (transformed to the raster's CRS); None outside the raster."""
    with open_geotiff(path) as src:
        if src.crs is None:
            return None
        x, y = Transformer.from_crs("EPSG:4326", src.crs, always_xy=True).transform(lon, lat)
        row, col = src.index(x, y)
        if not (0 <= row < src.height and 0 <= col < src.width):
            return None
        v = src.read(1, window=Window(col, row, 1, 1))[0, 0]
        valid = src.read_masks(1, window=Window(col, row, 1, 1))[0, 0] > 0
    return PointValue(int(row), int(col), int(v) if valid else None)


def polygons_geojson(path: str | Path, colors: list[str], max_features: int = 5000) -> tuple[dict[str, Any], int]:
    """Polygons (GPKG/SHP/GeoJSON) -> (GeoJSON in EPSG:4326 with a ``fill`` colour per feature, total count).

    Only the ``max_features`` largest polygons are kept so the browser stays responsive on
    city-sized outputs; the total tells the caller how many there were.
    """
    import geopandas as gpd

    gdf = gpd.read_file(path)
    total = len(gdf)
    if total > max_features:
        gdf = gdf.loc[gdf.geometry.area.sort_values(ascending=False).index[:max_features]]
    if gdf.crs is not None:
        gdf = gdf.to_crs("EPSG:4326")
    id_col = next((c for c in ("class_id", "class", "value") if c in gdf.columns and np.issubdtype(gdf[c].dtype, np.integer)), None)
    gdf = gdf.copy()
    gdf["fill"] = [colors[i] if id_col is not None and 0 <= i < len(colors) else "#3388ff"
                   for i in (gdf[id_col].astype(int) if id_col else [-1] * len(gdf))]
    return json.loads(gdf.to_json(drop_id=True)), total
