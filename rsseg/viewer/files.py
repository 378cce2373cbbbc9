"""Which files the map viewer may touch: paths confined to one data directory, and uploads.

The viewer is a web server: every path it opens comes from a browser (a select box, a query
parameter, an uploaded file name), so every path is resolved (symlinks included) and must stay
inside the configured data directory. Rasters are opened with the GeoTIFF driver only: GDAL picks
a driver from the file's content, not its name, and a VRT disguised as ``.tif`` could otherwise
make the server read any file on the machine. Every raster the viewer opens or accepts as an
upload is also held to a pixel-count limit (:data:`DEFAULT_MAX_PIXELS`, ``RSSEG_MAX_PIXELS``,
``rsseg app --max-pixels``): a few-kB sparse GeoTIFF can declare a size that would tie up the
server; and an upload must read completely (a truncated file is refused when it arrives).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import rasterio
from rasterio.errors import RasterioError

from rsseg.errors import ConfigError, InputNotFoundError, InputRasterError, RsSegError
from rsseg.inference.engines import is_cached_export
from rsseg.io import atomic_path, open_raster

RASTER_SUFFIXES = (".tif", ".tiff")
#: models the viewer offers: checkpoints and exported models (rsseg export)
CHECKPOINT_SUFFIXES = (".ckpt", ".onnx")
#: listing stops after this many files or folders so a huge data directory cannot stall the page
MAX_LISTED = 2000
MAX_WALKED_DIRS = 5000
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
#: largest raster (width x height) the viewer opens or accepts; about 22k x 22k pixels
DEFAULT_MAX_PIXELS = 500_000_000
MAX_PIXELS_ENV = "RSSEG_MAX_PIXELS"


def max_pixels(environ: dict[str, str] | None = None) -> int:
    """The viewer's pixel-count limit: ``RSSEG_MAX_PIXELS`` (set by ``rsseg app --max-pixels``) or the default."""
    value = (os.environ if environ is None else environ).get(MAX_PIXELS_ENV)
    try:
        limit = int(float(value)) if value else DEFAULT_MAX_PIXELS
    except ValueError:
        raise ConfigError(f"{MAX_PIXELS_ENV}={value!r} must be a number of pixels, e.g. 500000000") from None
    if limit < 1:
        raise ConfigError(f"{MAX_PIXELS_ENV} must be at least 1 pixel (got {value})")
    return limit


def file_stamp(path: str | Path) -> tuple[str, int, int]:
    """(resolved path, mtime in ns, size): the cache key of a file's current content."""
    p = Path(path).resolve()
    st = p.stat()
    return str(p), st.st_mtime_ns, st.st_size


def resolve_under(root: str | Path, relative: str | Path) -> Path:
    """``root / relative`` resolved (symlinks followed); an error unless it stays inside ``root``."""
    base = Path(root).resolve()
    candidate = (base / Path(relative)).resolve()
    if not candidate.is_relative_to(base):
        raise InputNotFoundError(f"{relative} is outside the data directory {base}; pick a file inside it (or start the app with --data-dir)")
    if not candidate.is_file():
        raise InputNotFoundError(f"{relative} is not a file in the data directory {base}")
    return candidate


def list_files(root: str | Path, suffixes: tuple[str, ...], *, exclude: str | Path | None = None) -> list[str]:
    """Files under ``root`` with one of ``suffixes``, as sorted POSIX paths relative to ``root``.

    Hidden directories and ``exclude`` (the viewer's own cache) are skipped; symlinks that
    resolve outside ``root`` are left out rather than followed, and so are the ONNX exports that
    predict caches beside a checkpoint (the checkpoint stands for them).
    """
    base = Path(root).resolve()
    if not base.is_dir():
        raise InputNotFoundError(f"data directory {root} does not exist; pass an existing folder with --data-dir")
    skip = Path(exclude).resolve() if exclude else None
    found: list[str] = []
    for walked, (dirpath, dirnames, filenames) in enumerate(os.walk(base, followlinks=False)):
        if walked >= MAX_WALKED_DIRS:
            break
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and (skip is None or (here / d).resolve() != skip))
        for name in sorted(filenames):
            if not name.lower().endswith(suffixes) or name.startswith(".") or is_cached_export(name):
                continue
            path = here / name
            if path.resolve().is_relative_to(base) and path.resolve().is_file():
                found.append(path.relative_to(base).as_posix())
            if len(found) >= MAX_LISTED:
                return sorted(found)
    return sorted(found)


def open_geotiff(path: str | Path, limit: int | None = None) -> rasterio.DatasetReader:
    """Open ``path`` with the GeoTIFF driver only, within the pixel-count ``limit`` (default
    :func:`max_pixels`); see the module docstring."""
    limit = max_pixels() if limit is None else limit
    src = open_raster(path, "viewer", geotiff_only=True)
    if src.width * src.height > limit:
        src.close()
        raise InputRasterError(f"{Path(path).name} is {src.width}x{src.height} = {src.width * src.height:,} pixels; the "
                               f"viewer's limit is {limit:,} (predict it with rsseg predict, or raise the limit with "
                               "rsseg app --max-pixels)")
    return src


def check_raster(path: str | Path, limit: int | None = None) -> Path:
    """Check that ``path`` is a GeoTIFF within the pixel limit before any reader that accepts
    every GDAL format sees it."""
    open_geotiff(path, limit).close()
    return Path(path)


def check_complete(path: str | Path, name: str | None = None) -> None:
    """Read every block of every band: a truncated or corrupt GeoTIFF whose header is intact
    fails here, with one line, instead of halfway through a prediction."""
    with open_geotiff(path) as src:
        try:
            for _, window in src.block_windows(1):
                src.read(window=window)
        except RasterioError as exc:
            first = str(exc.__cause__ or exc).splitlines()[0][:160]
            raise InputRasterError(f"{name or Path(path).name} is truncated or corrupt ({first}); upload the complete "
                                   "file again") from None


def save_upload(data: bytes, name: str, dest_dir: str | Path, max_mb: float) -> Path:
    """Store an uploaded GeoTIFF under ``dest_dir`` and return its path.

    The name keeps only safe characters and is prefixed with a content hash, so the same upload
    maps to the same file (and the same cached prediction) and two uploads never collide.
    """
    if len(data) > max_mb * 1024 * 1024:
        raise InputRasterError(f"upload {name!r} is {len(data) / 2**20:.1f} MB; the limit is {max_mb:g} MB (raise it with --max-upload-mb)")
    clean = _SAFE_NAME.sub("_", Path(name).name).lstrip("._") or "upload.tif"
    if not clean.lower().endswith(RASTER_SUFFIXES):
        raise InputRasterError(f"upload {name!r} is not a .tif/.tiff GeoTIFF")
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / f"{hashlib.sha256(data).hexdigest()[:16]}-{clean}"
    if not target.is_file():
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
        try:
            check_raster(target)
            check_complete(target, f"upload {name!r}")
        except RsSegError:
            target.unlink(missing_ok=True)
            raise
    return target


def is_rsseg_output(path: str | Path) -> bool:
    """True for rasters rsseg wrote: class rasters (``CLASS_NAMES`` tag), confidence rasters (band
    description) and the viewer's error layers (``RSSEG_PRODUCT`` tag). Unreadable files count as inputs
    (opening them later gives the error)."""
    try:
        with open_geotiff(path) as src:  # the header only
            tags = src.tags()
            desc = (src.descriptions[0] or "").lower() if src.count else ""
    except RsSegError:
        return False
    return "CLASS_NAMES" in tags or "RSSEG_PRODUCT" in tags or desc.startswith("confidence")


def list_inputs(root: str | Path, *, exclude: str | Path | None = None) -> list[str]:
    """Rasters under ``root`` (as :func:`list_files`) that are not rsseg's own outputs."""
    base = Path(root).resolve()
    return [f for f in list_files(base, RASTER_SUFFIXES, exclude=exclude) if not is_rsseg_output(base / f)]
