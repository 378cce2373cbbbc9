"""Map tiles at full resolution, served from the viewer's own rasters on 127.0.0.1.

The PNG overlays of :mod:`~rsseg.viewer.render` are decimated to ``MAX_DISPLAY_PX``, so a
4096 px result shows at a quarter of its resolution. Here each raster is cut into Web Mercator
XYZ tiles on request (rio-tiler reads only the blocks or overview a tile needs from the COG), so
zooming in shows native pixels: beyond the raster's native zoom tiles are resampled with nearest
neighbour and each source pixel becomes a crisp block.

The server is a thread inside the Streamlit process, bound to 127.0.0.1 on a free port. It serves
only layers the app registered (an id maps to a path that already passed the GeoTIFF-only check
of :mod:`~rsseg.viewer.files`); any other URL is a 404, so no path from the browser is opened.
rio-tiler is the optional ``viewer`` extra: without it :func:`tiles_available` is False and the app
falls back to overlays.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.enums import Resampling

from rsseg.config import hex_rgb, is_hex_color
from rsseg.viewer.files import open_geotiff
from rsseg.viewer.render import _encode

TILE_PX = 256
#: zoom levels past the native one that the map still offers (each source pixel 4 screen pixels)
OVERZOOM = 2
_TILE_URL = re.compile(r"^/tiles/([0-9a-f]{16})/(\d{1,2})/(\d+)/(\d+)\.png$")


def tiles_available() -> bool:
    """True when rio-tiler (the ``viewer`` extra) is installed."""
    try:
        import rio_tiler  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class TileLayer:
    """What one tile layer shows: ``kind`` "image" (bands stretched by ``ranges``) or "classes"
    (band 1 ids coloured by ``colors``, ``hidden`` ids transparent)."""

    path: str
    kind: str
    colors: tuple[str, ...] = ()
    hidden: tuple[int, ...] = ()
    bands: tuple[int, ...] = (1,)
    ranges: tuple[tuple[float, float], ...] | None = None

    @property
    def id(self) -> str:
        return hashlib.sha256(json.dumps([self.path, self.kind, self.colors, self.hidden, self.bands, self.ranges]).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TileInfo:
    """Where a layer is: lat/lon bounds ((south, west), (north, east)) and zooms, native = ``max_native``."""

    bounds: tuple[tuple[float, float], tuple[float, float]]
    min_zoom: int
    max_native: int

    @property
    def max_zoom(self) -> int:
        return self.max_native + OVERZOOM


@contextmanager
def _reader(path: str) -> Iterator[Any]:
    """A rio-tiler Reader on a dataset opened by the GeoTIFF-only opener (rio-tiler alone would
    accept any GDAL format), quiet about files without overviews."""
    from rio_tiler.io import Reader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open_geotiff(path) as src, Reader(path, dataset=src) as reader:
            yield reader


def tile_info(path: str | Path) -> TileInfo:
    """Bounds and zoom range of a raster as Web Mercator tiles."""
    with _reader(str(path)) as r:
        w, s, e, n = r.get_geographic_bounds("EPSG:4326")
        return TileInfo(((s, w), (n, e)), int(r.minzoom), int(r.maxzoom))


def image_layer(path: str | Path) -> TileLayer:
    """An input image as tiles: its first three bands (one band: grey), stretched 2-98 % over the
    whole raster (computed once from an overview-sized read) so tiles match each other."""
    with open_geotiff(path) as src:
        bands = (1, 2, 3) if src.count >= 3 else (1,)
        ranges = None
        if src.dtypes[0] != "uint8":
            scale = max(1.0, max(src.width, src.height) / 1024)
            shape = (max(1, round(src.height / scale)), max(1, round(src.width / scale)))
            data = src.read(list(bands), out_shape=(len(bands), *shape), resampling=Resampling.average)
            valid = src.dataset_mask(out_shape=shape) > 0
            ranges = tuple(_percentiles(b, valid) for b in data)
    return TileLayer(str(path), "image", bands=bands, ranges=ranges)


def _percentiles(band: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    vals = band[valid & np.isfinite(band)] if np.issubdtype(band.dtype, np.floating) else band[valid]
    if vals.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(vals, [2, 98])
    return float(lo), float(hi)


def class_layer(path: str | Path, colors: list[str], hidden: tuple[int, ...] = ()) -> TileLayer:
    """A class raster (band 1 = ids) as tiles in ``colors``; ``hidden`` ids are transparent."""
    return TileLayer(str(path), "classes", colors=tuple(colors), hidden=tuple(sorted(hidden)))


def render_tile(layer: TileLayer, z: int, x: int, y: int) -> bytes | None:
    """PNG of tile (z, x, y) of ``layer``; None when the tile lies outside the raster.

    Classes are always resampled with nearest neighbour (every pixel a real id); images with
    bilinear below their native zoom and nearest from it on, so full zoom shows the pixels.
    """
    from rio_tiler.errors import TileOutsideBounds

    with _reader(layer.path) as r:
        method = "nearest" if layer.kind == "classes" or z >= r.maxzoom else "bilinear"
        try:
            img = r.tile(x, y, z, tilesize=TILE_PX, indexes=list(layer.bands), resampling_method=method,
                         reproject_method=method)
        except TileOutsideBounds:
            return None
    data = img.array.data  # [B, 256, 256], masked where nodata
    valid = ~np.ma.getmaskarray(img.array).any(0)
    if layer.kind == "classes":
        lut = np.zeros((256, 4), np.uint8)
        for i, c in enumerate(layer.colors[:255]):
            lut[i] = (*hex_rgb(c), 255) if is_hex_color(c) else (128, 128, 128, 255)
        for i in layer.hidden:
            lut[i] = 0
        rgba = lut[np.clip(data[0], 0, 255).astype(np.int64)]
        rgba[~valid] = 0
        return _encode(rgba)
    if layer.ranges is None:
        rgb = np.stack([b.astype(np.uint8) for b in data], -1)
    else:
        rgb = np.stack([_scale(b, lo, hi) for b, (lo, hi) in zip(data, layer.ranges, strict=True)], -1)
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, -1)
    return _encode(np.concatenate([rgb, (valid * 255).astype(np.uint8)[..., None]], -1))


def _scale(band: np.ndarray, lo: float, hi: float) -> np.ndarray:
    scaled = (band.astype(np.float64) - lo) / max(hi - lo, 1e-12)
    return (np.clip(np.nan_to_num(scaled), 0, 1) * 255).astype(np.uint8)


@dataclass
class TileServer:
    """XYZ tiles of registered layers on ``http://127.0.0.1:<port>/tiles/<id>/{z}/{x}/{y}.png``."""

    host: str = "127.0.0.1"
    port: int = 0
    layers: dict[str, TileLayer] = field(default_factory=dict)
    _httpd: ThreadingHTTPServer | None = None

    def start(self) -> TileServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                m = _TILE_URL.match(self.path.split("?", 1)[0])
                layer = server.layers.get(m.group(1)) if m else None
                body = None
                if layer is not None:
                    z, x, y = (int(v) for v in m.groups()[1:])
                    if 0 <= x < 2**z and 0 <= y < 2**z:
                        try:
                            body = render_tile(layer, z, x, y)
                        except Exception as exc:  # noqa: BLE001 - one bad tile must not stop the server
                            self.send_error(500, str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
                            return
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "max-age=3600")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # noqa: ANN002 - quiet: library code prints nothing
                pass

        self._httpd = ThreadingHTTPServer((self.host, self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, name="rsseg-tiles", daemon=True).start()
        return self

    def register(self, layer: TileLayer) -> str:
        """Serve ``layer`` and return its URL template (Leaflet's ``{z}/{x}/{y}``)."""
        self.layers[layer.id] = layer
        return f"http://{self.host}:{self.port}/tiles/{layer.id}/{{z}}/{{x}}/{{y}}.png"

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

