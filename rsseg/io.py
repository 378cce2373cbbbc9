"""Small file-system helpers: the one raster opener, atomic outputs and the overwrite policy."""

from __future__ import annotations

import atexit
import contextlib
import errno
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from rsseg.errors import (
    CheckpointError,
    FallbackWarning,
    InputNotFoundError,
    InputRasterError,
    OutputExistsError,
    OutputPathError,
)

if TYPE_CHECKING:
    import rasterio

    from rsseg.stac import AssetBand


#: URL schemes read through GDAL's network virtual file systems
REMOTE_PREFIXES = {"http": "/vsicurl/", "https": "/vsicurl/", "s3": "/vsis3/", "gs": "/vsigs/"}
# ``Path("https://host/a.tif")`` folds the double slash: accept ``https:/host/a.tif`` as the same URL
_URL = re.compile(r"^(https?|s3|gs):/+(.*)$", re.IGNORECASE)
#: GDAL's limits for remote rasters: seconds to connect, seconds per request, and a transfer
#: slower than LOW_SPEED_LIMIT bytes/s for LOW_SPEED_TIME seconds fails, so a stalled server stops
#: predict with one line instead of hanging it. A value set in the environment wins.
HTTP_LIMITS = {"GDAL_HTTP_CONNECTTIMEOUT": "20", "GDAL_HTTP_TIMEOUT": "300", "GDAL_HTTP_LOW_SPEED_TIME": "30",
               "GDAL_HTTP_LOW_SPEED_LIMIT": "1024"}


def http_options() -> dict[str, str]:
    """The GDAL config options of :data:`HTTP_LIMITS` that the environment does not set itself."""
    return {key: value for key, value in HTTP_LIMITS.items() if key not in os.environ}


def _shortest_limit() -> float:
    """Seconds after which one of the HTTP limits in effect (the environment's, else ours) gives up."""
    seconds = []
    for key in ("GDAL_HTTP_CONNECTTIMEOUT", "GDAL_HTTP_TIMEOUT", "GDAL_HTTP_LOW_SPEED_TIME"):
        try:
            seconds.append(float(os.environ.get(key) or HTTP_LIMITS.get(key, "")))
        except ValueError:
            continue
    return min(seconds, default=float("inf"))


def _http_limit(key: str) -> float:
    """The HTTP limit ``key`` in effect (the environment's, else :data:`HTTP_LIMITS`'s), in seconds."""
    try:
        return float(os.environ.get(key) or HTTP_LIMITS[key])
    except ValueError:
        return float(HTTP_LIMITS[key])


def gdal_path(source: str | Path) -> str:
    """The name GDAL opens for a local path or a URL: ``http(s)://`` -> ``/vsicurl/`` (range
    requests: only the blocks read are fetched), ``s3://`` -> ``/vsis3/``, ``gs://`` -> ``/vsigs/``
    (credentials from the usual AWS_* / GS_* environment). Anything else is returned unchanged."""
    name = str(source)
    match = _URL.match(name)
    if not match:
        return name
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme in ("http", "https"):
        return f"/vsicurl/{scheme}://{rest}"
    return f"{REMOTE_PREFIXES[scheme]}{rest}"


def is_remote(source: str | Path) -> bool:
    """Whether ``source`` is a URL (http(s), s3, gs) rather than a local path."""
    return bool(_URL.match(str(source)))


def unfold_url(source: str) -> str:
    """A URL with its ``//`` restored if ``Path`` folded it; anything else unchanged."""
    return _URL.sub(lambda m: f"{m.group(1)}://{m.group(2)}", source)


def source_stem(source: str | Path) -> str:
    """File name without extension of a path or URL (query and fragment dropped), for naming outputs."""
    name = str(source)
    if is_remote(name):
        name = urlsplit(unfold_url(name)).path
    return Path(name.rstrip("/")).stem or "input"


def cache_dir() -> Path:
    """The user cache directory of rsseg (ONNX exports, dataset statistics): ``$RSSEG_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/rsseg``, else ``~/.cache/rsseg``. Nothing is created here."""
    if os.environ.get("RSSEG_CACHE_DIR"):
        return Path(os.environ["RSSEG_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rsseg"


def open_raster(path: str | Path, what: str = "input", *, geotiff_only: bool = False,
                asset: str | None = None, allow_local_assets: bool = False) -> rasterio.DatasetReader:
    """Open any GDAL-readable raster for reading; every rsseg reader goes through here.

    ``path`` is a local file, a URL (``https://``, ``s3://``, ``gs://``: see :func:`gdal_path`;
    only the blocks read travel; a server without range requests: the file is downloaded once,
    :func:`local_copy`), a GDAL path (``/vsizip/...``), or a STAC item (a ``.json`` file or URL)
    whose ``asset`` is read (default ``visual``; several assets or bands, ``red,green,blue``,
    are stacked into one raster: :func:`stack_assets`; :mod:`rsseg.stac`; an asset that names a
    local file needs ``allow_local_assets``).
    Failures become one-line errors that call it the ``what`` raster (input, prediction,
    reference, dataset...): :class:`InputNotFoundError` for a missing local file,
    :class:`InputRasterError` for an unreadable or empty one, or a server that does not answer
    within :data:`HTTP_LIMITS`. ``geotiff_only`` admits the GeoTIFF
    driver alone (for paths that come from a browser upload). Rasterio's NotGeoreferencedWarning
    is silenced: a PNG tile has no CRS by design, and predict warns about a missing CRS in its
    own words.
    """
    from rsseg.stac import asset_bands, is_stac_item

    name = str(path)
    if is_stac_item(name):
        bands = asset_bands(unfold_url(name), asset, allow_local=allow_local_assets)
        if len(bands) > 1 or bands[0].band is not None:
            return stack_assets(bands, what, unfold_url(name))
        name = bands[0].href
    return _open(name, what, path, geotiff_only)


def _remote_env(remote: bool) -> contextlib.AbstractContextManager:
    """GDAL options for opening remote rasters: no directory listing (a remote file has no
    directory to list for sidecars: that request is skipped) and the time limits."""
    import rasterio

    if not remote:
        return contextlib.nullcontext()
    return rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR", **http_options())


def _open(name: str, what: str, shown: str | Path, geotiff_only: bool = False) -> rasterio.DatasetReader:
    """:func:`open_raster` of one raster (not a STAC item); ``shown`` names it in messages."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    remote = is_remote(name)
    url = unfold_url(name)
    if remote and (copy := _copies.get(url)) is not None and copy.is_file():
        remote, name = False, str(copy)  # a server without range requests: downloaded before
    name = gdal_path(name)
    if not name.startswith("/vsi") and "://" not in name and not Path(name).exists():
        raise InputNotFoundError(f"{what} raster not found: {shown}")
    started = time.monotonic()
    try:
        with warnings.catch_warnings(), _remote_env(remote):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = rasterio.open(name, driver="GTiff") if geotiff_only else rasterio.open(name)
    except RasterioIOError as exc:
        if geotiff_only:
            raise InputRasterError(f"{what} raster {Path(name).name} is not a readable GeoTIFF; only .tif/.tiff "
                                   "GeoTIFF files are accepted here") from None
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        # GDAL reports a stalled transfer as "not recognized as a supported format": the time tells
        if remote and time.monotonic() - started >= 0.9 * _shortest_limit():
            raise InputRasterError(f"cannot read {what} raster {shown}: the server did not answer in time (within "
                                   f"{_shortest_limit():g} s); "
                                   "check the URL and the network, or raise GDAL_HTTP_TIMEOUT / "
                                   "GDAL_HTTP_LOW_SPEED_TIME in the environment") from None
        if remote and (copy := local_copy(url, what, shown)) is not None:
            return _open(str(copy), what, shown, geotiff_only)
        raise InputRasterError(f"cannot read {what} raster {shown}: {first} "
                               "(expected a GDAL-readable raster: GeoTIFF, COG, VRT, JP2, PNG...)") from None
    if src.width == 0 or src.height == 0 or src.count == 0:
        src.close()
        raise InputRasterError(f"{what} raster {shown} is empty ({src.width}x{src.height} pixels, {src.count} bands)")
    return src


#: largest raster downloaded whole from a server that cannot answer range requests
MAX_DOWNLOAD_BYTES = 2 * 2**30
_copies: dict[str, Path] = {}
_copies_lock = threading.Lock()


@functools.cache
def _download_folder() -> Path:
    """The temporary folder of :func:`local_copy`: made on first use, removed when the process exits."""
    folder = Path(tempfile.mkdtemp(prefix="rsseg-download-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def local_copy(url: str, what: str = "input", shown: str | Path | None = None) -> Path | None:
    """The whole raster at the http(s) ``url`` in a temporary file when its server ignores range
    requests (GDAL's ``/vsicurl/`` cannot read such a file unless it is small), else None.

    One request tells (a range request the server answers with the whole file) and, without range
    support, is the download, announced by a :class:`~rsseg.errors.FallbackWarning`; within
    ``GDAL_HTTP_TIMEOUT`` in all and :data:`MAX_DOWNLOAD_BYTES`. Once per process: every later open
    of ``url`` reads the copy. The folder is removed when the process exits.
    """
    from rsseg.http import fetch, is_http_url

    shown = url if shown is None else shown
    with _copies_lock:
        if url in _copies and _copies[url].is_file():
            return _copies[url]
        if not is_http_url(url):
            return None
        target = _download_folder() / f"{len(_copies)}_{Path(urlsplit(url).path).name or 'raster'}"

        announced = []

        def announce(size: int | None) -> None:
            announced.append(size)
            of = f" ({size / 2**20:,.1f} MB)" if size is not None else ""
            warnings.warn(f"the server of {shown} does not answer HTTP range requests: downloading the whole "
                          f"file{of} to a temporary file", FallbackWarning, stacklevel=5)

        try:
            with target.open("wb") as sink:
                whole = fetch(url, sink, timeout=_http_limit("GDAL_HTTP_TIMEOUT"), max_bytes=MAX_DOWNLOAD_BYTES,
                              what=f"{what} raster", if_whole=announce,
                              too_large="its server does not answer HTTP range requests, so rsseg would have to "
                                        "download it whole; download it yourself and pass the file, or serve it "
                                        "with range requests")
        except BaseException as exc:
            target.unlink(missing_ok=True)
            if isinstance(exc, OSError) and not announced:
                return None  # no answer or an HTTP error (404...): GDAL's own message says more
            if isinstance(exc, OSError):
                reason = "the server did not answer in time" if "timed out" in str(exc) else str(exc).splitlines()[0]
                raise InputRasterError(f"cannot read {what} raster {shown}: {reason} (downloading it whole, as its "
                                       "server does not answer HTTP range requests)") from None
            raise
        if not whole:
            target.unlink()
            return None
        _copies[url] = target
    return target


def stack_assets(bands: Sequence[AssetBand], what: str, item: str) -> rasterio.DatasetReader:
    """One raster whose bands are ``bands`` of a STAC item's assets, in order: a VRT held in
    memory (GDAL reads it like any raster, window by window; nothing is copied), its bands
    described by their ``eo:bands`` common names. Every asset must be on one grid (CRS,
    transform, size): assets of another resolution (Sentinel-2's 20 m bands beside its 10 m
    ones) are refused, not resampled, so no band is silently interpolated."""
    import xml.etree.ElementTree as ET

    import numpy as np
    from rasterio.dtypes import dtype_rev, typename_fwd
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.io import MemoryFile

    opened = {}  # href -> the facts of its raster
    for band in bands:
        if band.href not in opened:
            with _open(band.href, what, f"{band.href} (asset {band.asset!r} of STAC item {item})") as src:
                opened[band.href] = dict(path=src.name, crs=src.crs, transform=src.transform, size=(src.width, src.height),
                                         dtypes=src.dtypes, nodata=src.nodatavals, asset=band.asset)
    grids: dict[tuple, list[dict]] = {}
    for facts in opened.values():
        crs = facts["crs"].to_wkt() if facts["crs"] else ""
        grids.setdefault((crs, facts["transform"], facts["size"]), []).append(facts)
    if len(grids) > 1:
        sizes = "; ".join(f"{', '.join(f['asset'] for f in group)}: {_pixel_size(group[0])} pixels, "
                          f"{group[0]['size'][0]}x{group[0]['size'][1]}" for group in grids.values())
        raise InputRasterError(f"the assets of STAC item {item} are not on one grid ({sizes}); choose assets of one "
                               "resolution (e.g. Sentinel-2's 10 m bands: blue, green, red, nir), or resample them "
                               "onto one grid first (gdalwarp -tr)")
    layers = []  # (GDAL path, source band, description, nodata, dtype)
    for band in bands:
        facts = opened[band.href]
        count = len(facts["dtypes"])
        if band.band is not None and band.band > count:
            raise InputRasterError(f"asset {band.asset!r} of STAC item {item} declares band {band.band} in eo:bands "
                                   f"but its raster has {count} band(s)")
        numbers = [band.band] if band.band is not None else list(range(1, count + 1))
        names = band.names if len(band.names) == len(numbers) else (None,) * len(numbers)
        layers += [(facts["path"], n, name, facts["nodata"][n - 1], facts["dtypes"][n - 1])
                   for n, name in zip(numbers, names, strict=True)]
    first = next(iter(opened.values()))
    dtype = typename_fwd[dtype_rev[np.result_type(*[layer[4] for layer in layers]).name]]
    vrt = ET.Element("VRTDataset", rasterXSize=str(first["size"][0]), rasterYSize=str(first["size"][1]))
    if first["crs"]:
        ET.SubElement(vrt, "SRS").text = first["crs"].to_wkt()
    ET.SubElement(vrt, "GeoTransform").text = ", ".join(repr(float(v)) for v in first["transform"].to_gdal())
    for i, (path, number, name, nodata, _) in enumerate(layers, 1):
        element = ET.SubElement(vrt, "VRTRasterBand", dataType=dtype, band=str(i))
        if name:
            ET.SubElement(element, "Description").text = name
        if nodata is not None:
            ET.SubElement(element, "NoDataValue").text = repr(float(nodata))
        source = ET.SubElement(element, "SimpleSource")
        ET.SubElement(source, "SourceFilename", relativeToVRT="0").text = path
        ET.SubElement(source, "SourceBand").text = str(number)
    label = "+".join(dict.fromkeys(b.names[0] if b.band is not None and b.names[0] else b.asset for b in bands))
    remote = any(path.startswith(tuple(REMOTE_PREFIXES.values())) for path, *_ in layers)
    memory = MemoryFile(ET.tostring(vrt), filename=f"{source_stem(item)}_{label}.vrt")
    try:
        with warnings.catch_warnings(), _remote_env(remote):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = memory.open()
            # GDAL opens a VRT's sources on first use, and a remote file takes the HTTP limits in
            # effect when it opens: asking each band for its overviews opens them now, in here
            for band in src.indexes:
                src.overviews(band)
            return src
    finally:
        # the XML is parsed when the VRT opens, so the in-memory file goes at once; close() removes
        # only the file (leaving the MemoryFile's ``with`` block would close the dataset too)
        memory.close()


def _pixel_size(facts: dict) -> str:
    """The pixel width of a raster described by :func:`stack_assets`, with its unit when metres."""
    crs = facts["crs"]
    metres = crs is not None and crs.is_projected and (crs.linear_units or "").lower() in ("metre", "meter")
    return f"{abs(facts['transform'].a):g}{' m' if metres else ''}"


def check_output(path: str | Path, overwrite: bool) -> Path:
    """Fail early, before any work, when ``path`` exists (without --overwrite) or cannot be written."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass --overwrite to replace it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputPathError(f"output directory {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise OutputPathError(f"output directory {parent} is not writable")
    # os.access says yes to root everywhere, and to /proc or a read-only mount: try a file there
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".probe", dir=parent)
    except OSError as exc:
        raise OutputPathError(f"cannot write in the output directory {parent} ({exc.strerror or exc}); "
                              "choose a folder you can write to") from None
    os.close(fd)
    os.unlink(probe)
    return path


def check_suffix(path: str | Path, suffixes: Sequence[str], label: str, kind: str) -> Path:
    """Refuse, before any work, an output named other than its format (``-o map.png`` would write a
    GeoTIFF named .png that viewers open as a PNG, or not at all). ``suffixes``: the accepted
    endings, lower case (any case passes); ``label``: the option or product that names ``path``;
    ``kind``: what is written there, e.g. ``the class raster is a Cloud-Optimized GeoTIFF``."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in suffixes:
        raise OutputPathError(f"{label} {path}: {kind}, so its name must end in {' or '.join(suffixes)}, not "
                              f"{ext or 'no extension'}; e.g. {label} {path.with_suffix(suffixes[0])}")
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A crash or Ctrl-C inside the block removes the temporary file and leaves ``path`` untouched.
    The suffix is kept so drivers that pick a format from the extension still work.
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{path.suffix}", dir=path.parent or ".")
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # let the writer create it (some drivers refuse to open an existing empty file)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def staging_path(target: str | Path) -> Path:
    """A hidden temporary path beside ``target`` (same folder, so renaming it onto ``target`` is
    atomic and never crosses file systems), keeping the suffix for drivers that read it; not created."""
    target = Path(target)
    fd, name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".part{target.suffix}", dir=target.parent or ".")
    os.close(fd)
    os.unlink(name)
    return Path(name)


class Staging:
    """Outputs staged beside their targets and committed together, or not at all.

    :meth:`path` hands out a temporary path for a target (:func:`staging_path`), :meth:`folder` a
    temporary folder beside one (for multi-file products; :meth:`add` its files), and
    :meth:`remove_at_commit` a target that the new outputs replace by absence (a stale shapefile
    part). :meth:`commit` renames every temporary onto its target at the end, after every product
    is complete; :meth:`discard` (also on leaving the ``with`` block uncommitted) removes every
    temporary, so the old targets stay byte-identical.
    """

    def __init__(self) -> None:
        self._moves: list[tuple[Path, Path]] = []
        self._stale: list[Path] = []
        self._temps: list[Path] = []

    def path(self, target: str | Path) -> Path:
        tmp = staging_path(target)
        self._temps.append(tmp)
        self._moves.append((tmp, Path(target)))
        return tmp

    def folder(self, beside: str | Path) -> Path:
        beside = Path(beside)
        tmp = Path(tempfile.mkdtemp(prefix=f".{beside.stem}.", suffix=".part", dir=beside.parent or "."))
        self._temps.append(tmp)
        return tmp

    def add(self, tmp: str | Path, target: str | Path) -> None:
        self._moves.append((Path(tmp), Path(target)))

    def remove_at_commit(self, target: str | Path) -> None:
        self._stale.append(Path(target))

    def targets(self) -> list[Path]:
        """The targets that :meth:`commit` will write."""
        return [target for _, target in self._moves]

    def commit(self) -> None:
        for tmp, target in self._moves:
            os.replace(tmp, target)
        for target in self._stale:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
        self._moves, self._stale = [], []
        self.discard()  # the emptied folders

    def discard(self) -> None:
        for tmp in self._temps:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
        self._temps, self._moves, self._stale = [], [], []

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block SIGTERM raises KeyboardInterrupt in the main thread, so a terminated run
    cleans up (temporary files and folders) exactly as Ctrl-C does, and exits non-zero."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"terminated by signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


NO_SPACE = "no space left on device; free space or write elsewhere"
#: free bytes below which a failed write is taken for a full disk
NEARLY_FULL_BYTES = 2**20


def _nearly_full(path: str | Path) -> bool:
    try:
        return shutil.disk_usage(Path(path).parent).free < NEARLY_FULL_BYTES
    except OSError:
        return False


def write_error(exc: BaseException, what: str, path: str | Path | None) -> OutputPathError | None:
    """A failure writing an output (disk full, permissions, GDAL/OGR write errors) as one line, or
    ``None`` when ``exc`` is not a write failure (a bug or an rsseg error: re-raise it as is)."""
    from rsseg.errors import RsSegError

    if isinstance(exc, RsSegError):
        return None
    module = type(exc).__module__
    if not (isinstance(exc, OSError) or module.startswith(("rasterio", "pyogrio", "fiona"))):
        return None
    text = str(exc)
    if getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in text or "Free disk space" in text:
        reason = NO_SPACE
    elif isinstance(exc, PermissionError) or "Permission denied" in text:
        reason = "permission denied; choose a folder you can write to"
    elif path is not None and _nearly_full(path):  # GDAL's write errors carry no errno
        reason = NO_SPACE
    else:
        reason = (text.splitlines()[0][:160] if text else type(exc).__name__)
    where = f" {path}" if path is not None else ""
    return OutputPathError(f"cannot write the {what} output{where}: {reason} (nothing was replaced: "
                           "existing outputs are unchanged)")


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes, remembered per path, size and modification time: a run
    over many inputs reads its model file once."""
    path = Path(path).resolve()
    stat = path.stat()
    return _sha256(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))
    return path


def load_tensor_file(path: Path, what: str, expected: str) -> Any:
    """A ``.safetensors`` file (tensors only by format) or :func:`load_torch_file`: the one way rsseg
    reads weights it is handed, so neither kind can run code."""
    if path.suffix != ".safetensors":
        return load_torch_file(path, what, expected)
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - any read failure means "not a usable weights file"
        raise CheckpointError(f"cannot read {what} {path}: {exc} (expected {expected})") from None


def load_torch_file(path: Path, what: str, expected: str) -> Any:
    """``torch.load(weights_only=True)``: untrusted files never run code. A file that cannot be
    read becomes a CheckpointError naming ``what`` it should have been and the ``expected`` kind."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a usable file"
        # torch's own text advises weights_only=False, i.e. running the file's code: never quote it
        if "unsupported global" in str(exc).lower():
            why = "it holds Python objects beyond tensors and plain data, refused because loading them could run code"
        elif isinstance(exc, OSError):
            why = f"{exc.__class__.__name__}: {exc.strerror or exc}"
        else:
            why = "not a PyTorch file, or a corrupt or truncated one"
        raise CheckpointError(f"cannot read {what} {path}: {why} (expected {expected})") from None
