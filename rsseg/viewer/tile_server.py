"""Map tiles at full resolution, served from the viewer's own rasters on 127.0.0.1.

The PNG overlays of :mod:`~rsseg.viewer.render` are decimated to ``MAX_DISPLAY_PX``, so a
4096 px result shows at a quarter of its resolution. Here each raster is cut into Web Mercator
XYZ tiles on request (rio-tiler reads only the blocks or overview a tile needs from the COG), so
zooming in shows native pixels: beyond the raster's native zoom tiles are resampled with nearest
neighbour and each source pixel becomes a crisp block.

The server is bound to 127.0.0.1 on a free port. It serves only layers the app registered (an id
maps to a path that already passed the GeoTIFF-only check of :mod:`~rsseg.viewer.files`); any
other URL is a 404, so no path from the browser is opened. Every request resolves the layer's path
again (symlinks included) and refuses it (403) once it leads outside the directory it was
registered in, e.g. a file swapped for a symlink after registration.

No request can tie the server up. A tile reads at most :data:`MAX_TILE_READ_PX` source pixels:
the lowest zoom offered (:func:`min_zoom`) is where a tile would read more, from the raster or its
coarsest overview, so a raster with overviews zooms out to about one tile and one without stops
a few levels below its native zoom; tiles below that are refused (404) before any pixel is read.
Tiles render on a fixed pool of threads with a bounded queue (a full queue is a 503), and a
request that waits longer than the time limit is answered 503 instead of holding its connection.
rio-tiler comes with the base install; without it (removed by hand) :func:`tiles_available` is False and the app
falls back to overlays.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import threading
import warnings
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling

from rsseg.config import hex_rgb, is_hex_color
from rsseg.errors import InputNotFoundError, TileRequestError
from rsseg.viewer.files import open_geotiff
from rsseg.viewer.render import MAX_DISPLAY_PX, _encode

TILE_PX = 256
#: zoom levels past the native one that the map still offers (each source pixel 4 screen pixels)
OVERZOOM = 2
#: zoom levels below the one where the whole raster is about one tile (a raster with overviews)
ZOOM_OUT = 2
#: most source pixels one tile may read (from the raster or an overview): a fraction of a second
MAX_TILE_READ_PX = 1024 * 1024
#: threads that render tiles, tiles that may wait for one, and seconds a request waits for its tile
WORKERS = 4
QUEUE = 32
TILE_TIMEOUT_S = 15.0
#: set to 0 to serve the map as overview images (`rsseg app --host` beyond this machine does)
TILES_ENV = "RSSEG_TILES"
_TILE_URL = re.compile(r"^/tiles/([0-9a-f]{16})/(\d{1,2})/(\d+)/(\d+)\.png$")


def tiles_available() -> bool:
    """True when rio-tiler (part of the base install) is installed."""
    try:
        import rio_tiler  # noqa: F401
    except ImportError:
        return False
    return True


def tiles_off_reason(environ: Mapping[str, str] | None = None) -> str | None:
    """Why the map shows overview images instead of full-resolution tiles (one line for the
    viewer's panel), or None when tiles are served."""
    env = os.environ if environ is None else environ
    if env.get(TILES_ENV, "1") == "0":
        return (f"Map: overview images of at most {MAX_DISPLAY_PX} px, not full resolution (the tile server answers this "
                f"machine only, and the viewer is served to the network or started with {TILES_ENV}=0).")
    if not tiles_available():
        return (f"Map: overview images of at most {MAX_DISPLAY_PX} px, not full resolution: install rio-tiler "
                "(pip install 'rsseg[viewer]') for full-resolution tiles.")
    return None


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
    """Where a layer is: lat/lon bounds ((south, west), (north, east)) and zooms, native =
    ``max_native``; ``min_zoom`` is the lowest zoom the server renders (:func:`min_zoom`)."""

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


def min_zoom(src: rasterio.DatasetReader, native: int) -> int:
    """The lowest zoom whose tiles read at most :data:`MAX_TILE_READ_PX` pixels of ``src``.

    A tile ``d`` levels below the ``native`` zoom covers up to ``TILE_PX * 2**d`` source pixels a
    side (fewer where the raster is smaller) and is read from the coarsest overview no coarser than
    that. With overviews down to about one tile this reaches :data:`ZOOM_OUT` levels below the
    zoom where the raster is one tile; without overviews it stops two levels below the native zoom.
    """
    factors = src.overviews(1)
    one_tile = native - max(0, math.ceil(math.log2(max(src.width, src.height) / TILE_PX)))
    lowest = max(0, one_tile - ZOOM_OUT)
    z = native
    while z > lowest:
        step = 2 ** (native - z + 1)
        factor = max([f for f in factors if f <= step], default=1)
        read = min(src.width, TILE_PX * step) / factor * min(src.height, TILE_PX * step) / factor
        if read > MAX_TILE_READ_PX:
            break
        z -= 1
    return z


def tile_info(path: str | Path) -> TileInfo:
    """Bounds and zoom range of a raster as Web Mercator tiles."""
    with _reader(str(path)) as r:
        w, s, e, n = r.get_geographic_bounds("EPSG:4326")
        native = int(r.maxzoom)
        return TileInfo(((s, w), (n, e)), min_zoom(r.dataset, native), native)


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


def confined(path: str | Path, root: str | Path) -> Path:
    """``path`` resolved now (symlinks followed); a :class:`TileRequestError` (403) unless it is a
    file inside ``root``. The check runs on every request: a file swapped for a symlink after
    registration must not lead outside."""
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(Path(root).resolve()):
        raise TileRequestError(f"{Path(path).name} now leads outside the data directory; it is no longer served", 403)
    if not resolved.is_file():
        raise TileRequestError(f"{Path(path).name} no longer exists", 404)
    return resolved


def render_tile(layer: TileLayer, z: int, x: int, y: int, *, root: str | Path | None = None) -> bytes | None:
    """PNG of tile (z, x, y) of ``layer``; None when the tile lies outside the raster.

    Classes are always resampled with nearest neighbour (every pixel a real id); images with
    bilinear below their native zoom and nearest from it on, so full zoom shows the pixels.
    A zoom below :func:`min_zoom` is a :class:`TileRequestError` before any pixel is read; with
    ``root`` the path must still resolve inside it (:func:`confined`).
    """
    from rio_tiler.errors import TileOutsideBounds

    path = str(confined(layer.path, root)) if root is not None else layer.path
    with _reader(path) as r:
        native = int(r.maxzoom)
        lowest = min_zoom(r.dataset, native)
        if z < lowest:
            raise TileRequestError(f"zoom {z} is below the lowest zoom {lowest} of {Path(layer.path).name} (zoom in, "
                                   "or build overviews with gdaladdo)", 404)
        method = "nearest" if layer.kind == "classes" or z >= native else "bilinear"
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


class _PooledHTTPServer(HTTPServer):
    """An HTTP server whose connections are handled by a fixed pool of threads (the standard
    library's ThreadingHTTPServer starts one thread per request, without bound)."""

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], threads: int) -> None:
        super().__init__(address, handler)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="rsseg-tiles-http")

    def process_request(self, request: Any, client_address: Any) -> None:
        self.pool.submit(self._handle, request, client_address)

    def _handle(self, request: Any, client_address: Any) -> None:
        with contextlib.suppress(Exception):  # a client that went away; library code prints nothing
            self.finish_request(request, client_address)
        self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet (the standard server prints a traceback): library code prints nothing."""

    def server_close(self) -> None:
        super().server_close()
        self.pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class TileServer:
    """XYZ tiles of registered layers on ``http://127.0.0.1:<port>/tiles/<id>/{z}/{x}/{y}.png``.

    ``roots``: the directories layers may come from (the viewer's data and cache directories);
    empty, each layer is confined to the folder it was registered in. ``workers`` threads render
    tiles, ``queue`` more may wait (beyond that: 503), and a request waits at most
    ``tile_timeout`` seconds for its tile (then 503; the render finishes in its worker).
    """

    host: str = "127.0.0.1"
    port: int = 0
    roots: tuple[str | Path, ...] = ()
    workers: int = WORKERS
    queue: int = QUEUE
    tile_timeout: float = TILE_TIMEOUT_S
    layers: dict[str, TileLayer] = field(default_factory=dict)
    _httpd: _PooledHTTPServer | None = None
    _renders: ThreadPoolExecutor | None = None
    _slots: threading.BoundedSemaphore | None = None
    _layer_roots: dict[str, Path] = field(default_factory=dict)

    def start(self) -> TileServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10  # seconds a client may take to send its request line and headers

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                m = _TILE_URL.match(self.path.split("?", 1)[0])
                layer = server.layers.get(m.group(1)) if m else None
                body = None
                if layer is not None:
                    z, x, y = (int(v) for v in m.groups()[1:])
                    if 0 <= x < 2**z and 0 <= y < 2**z:
                        try:
                            body = server.tile(layer, z, x, y)
                        except TileRequestError as exc:
                            self.send_error(exc.status, _status_text(str(exc)))
                            return
                        except TimeoutError:
                            self.send_error(503, f"the tile took longer than {server.tile_timeout:g} s")
                            return
                        except Exception as exc:  # noqa: BLE001 - one bad tile must not stop the server
                            self.send_error(500, _status_text(str(exc) or type(exc).__name__))
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

        self._renders = ThreadPoolExecutor(self.workers, thread_name_prefix="rsseg-tiles-render")
        self._slots = threading.BoundedSemaphore(self.workers + self.queue)
        # a connection thread per possible render slot, and a few for answers that need none (404s)
        self._httpd = _PooledHTTPServer((self.host, self.port), Handler, self.workers + self.queue + 4)
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, name="rsseg-tiles", daemon=True).start()
        return self

    def register(self, layer: TileLayer) -> str:
        """Serve ``layer`` and return its URL template (Leaflet's ``{z}/{x}/{y}``)."""
        resolved = Path(layer.path).resolve()
        if self.roots:
            root = next((Path(r).resolve() for r in self.roots if resolved.is_relative_to(Path(r).resolve())), None)
            if root is None:
                raise InputNotFoundError(f"{layer.path} is outside the viewer's directories "
                                         f"({', '.join(str(r) for r in self.roots)}); it cannot be shown on the map")
        else:
            root = resolved.parent
        self._layer_roots[layer.id] = root
        self.layers[layer.id] = layer
        return f"http://{self.host}:{self.port}/tiles/{layer.id}/{{z}}/{{x}}/{{y}}.png"

    def tile(self, layer: TileLayer, z: int, x: int, y: int) -> bytes | None:
        """:func:`render_tile` on the worker pool within the time limit: a :class:`TileRequestError`
        (503) when every worker and queue slot is taken, ``TimeoutError`` past ``tile_timeout``."""
        if self._renders is None or self._slots is None:
            raise TileRequestError("the tile server is not running", 503)
        if not self._slots.acquire(blocking=False):
            raise TileRequestError("the tile server is busy; zoom or pan again in a moment", 503)
        try:
            future = self._renders.submit(render_tile, layer, z, x, y, root=self._layer_roots[layer.id])
        except BaseException:
            self._slots.release()
            raise
        # the slot frees when the render ends, not when its request gives up: a stuck render keeps it
        future.add_done_callback(lambda _: self._slots.release())
        return future.result(timeout=self.tile_timeout)

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._renders is not None:
            self._renders.shutdown(wait=False, cancel_futures=True)
            self._renders = None


def _status_text(message: str) -> str:
    """One line of ASCII for an HTTP status line."""
    return message.splitlines()[0][:200].encode("ascii", "replace").decode("ascii") if message else "error"
