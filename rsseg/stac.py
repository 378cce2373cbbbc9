"""STAC items as raster inputs: pick one asset of an item and return where its raster lives.

A STAC item (https://github.com/radiantearth/stac-spec, ``item-spec``) is a GeoJSON Feature
whose ``assets`` map names to ``{"href", "type", "roles"}``. Imagery catalogues (Maxar Open
Data, Planetary Computer, Earth Search) name the display-ready RGB COG ``visual``; that is the
default, any other asset is chosen by name. Relative hrefs resolve against the item's own
location (a file or a URL), as the spec says. Plain JSON: no STAC library is needed to read one
item.

An item is a file someone hands over, so what it may point at is limited: an asset href must be
relative (it resolves where the item lives) or an ``http(s)://``, ``s3://`` or ``gs://`` URL.
Absolute local paths, ``file://`` URLs and GDAL paths (``/vsizip/...``) would read a file on
this machine and report it as the item; they are refused unless the caller allows local assets
(``rsseg predict --allow-local-assets``). Fetching the item over HTTP has an overall time limit
(:data:`FETCH_TIMEOUT_S`), a size limit, and only follows redirects to http(s) URLs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

from rsseg.errors import InputNotFoundError, InputRasterError

#: the asset read when none is named
DEFAULT_ASSET = "visual"
_RASTER_TYPES = ("image/tiff", "image/jp2", "image/vnd.stac.geotiff")
#: seconds an item's JSON may take to arrive over HTTP, all of it (a server that sends one byte
#: at a time must not hang predict)
FETCH_TIMEOUT_S = 30.0
#: largest item JSON read over HTTP
MAX_ITEM_BYTES = 16 * 2**20
#: URL schemes an asset href may name without --allow-local-assets
REMOTE_SCHEMES = ("http", "https", "s3", "gs")


def is_stac_item(source: str | Path) -> bool:
    """Whether ``source`` (a path or URL) names a JSON file, which rsseg reads as a STAC item."""
    return urlsplit(str(source)).path.lower().endswith(".json")


def _is_url(source: str) -> bool:
    return urlsplit(source).scheme in ("http", "https")


def _fetch(url: str, timeout: float) -> str:
    """The body of ``url`` within ``timeout`` seconds in all (not per read), at most
    :data:`MAX_ITEM_BYTES`."""
    from urllib.request import HTTPRedirectHandler, build_opener

    class HttpOnly(HTTPRedirectHandler):
        """urllib follows a redirect to ftp:// too: the same rule as for asset hrefs, before it is followed."""

        def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201 - urllib's
            if not _is_url(newurl):
                raise InputRasterError(f"cannot read STAC item {url}: it redirects to {newurl}, which is not an "
                                       "http(s) URL")
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    size = 0
    with build_opener(HttpOnly).open(url, timeout=timeout) as response:
        while chunk := response.read1(65536):
            size += len(chunk)
            if size > MAX_ITEM_BYTES:
                raise InputRasterError(f"cannot read STAC item {url}: larger than {MAX_ITEM_BYTES // 2**20} MB; "
                                       "is it an item (not a catalogue or a raster)?")
            if time.monotonic() > deadline:
                raise InputRasterError(f"cannot read STAC item {url}: it did not arrive within {timeout:g} s "
                                       "(the server is too slow or stalled); check the URL and the network")
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8")


def load_item(source: str | Path, timeout: float | None = None) -> dict[str, Any]:
    """The item's JSON from a local file or an http(s) URL (within ``timeout`` seconds, default
    :data:`FETCH_TIMEOUT_S`); one-line errors otherwise."""
    name = str(source)
    try:
        if _is_url(name):
            text = _fetch(name, FETCH_TIMEOUT_S if timeout is None else timeout)
        elif "://" in name:
            raise InputRasterError(f"cannot read STAC item {name}: only local files and http(s) URLs are supported; "
                                   "use the item's https URL")
        else:
            if not Path(name).is_file():
                raise InputNotFoundError(f"STAC item not found: {name}")
            text = Path(name).read_text(encoding="utf-8")
        item = json.loads(text)
    except (OSError, ValueError) as exc:
        if isinstance(exc, (InputRasterError, InputNotFoundError)):
            raise
        if isinstance(exc, TimeoutError) or "timed out" in str(exc):
            raise InputRasterError(f"cannot read STAC item {name}: the server did not answer within "
                                   f"{FETCH_TIMEOUT_S if timeout is None else timeout:g} s; check the URL and the "
                                   "network") from None
        raise InputRasterError(f"cannot read STAC item {name}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    if not isinstance(item, dict) or not isinstance(item.get("assets"), dict):
        raise InputRasterError(f"{name} is not a STAC item (a JSON Feature with 'assets'); pass a raster or an item")
    return item


def pick_asset(item: dict[str, Any], asset: str | None = None, where: str = "the STAC item") -> str:
    """Name of the asset to read: ``asset`` if given, else ``visual``, else the only raster asset."""
    assets = item["assets"]
    listing = ", ".join(f"{k} ({v.get('type', '?')})" for k, v in assets.items()) or "none"
    if asset is not None:
        if asset not in assets:
            raise InputRasterError(f"{where} has no asset {asset!r}; its assets: {listing}")
        return asset
    if DEFAULT_ASSET in assets:
        return DEFAULT_ASSET
    rasters = [k for k, v in assets.items() if str(v.get("type", "")).split(";")[0].strip() in _RASTER_TYPES]
    if len(rasters) == 1:
        return rasters[0]
    raise InputRasterError(f"{where} has no '{DEFAULT_ASSET}' asset; name one with --asset (its assets: {listing})")


def asset_href(source: str | Path, asset: str | None = None, *, allow_local: bool = False) -> str:
    """Where the chosen asset's raster lives (URL or path), relative hrefs resolved against the
    item's location. An href that names a local file by itself (an absolute path, ``file://``, a
    GDAL path such as ``/vsizip/...``) or another URL scheme is refused unless ``allow_local``."""
    name = str(source)
    item = load_item(name)
    key = pick_asset(item, asset, f"STAC item {name}")
    href = item["assets"][key].get("href")
    if not href or not isinstance(href, str):
        raise InputRasterError(f"asset {key!r} of STAC item {name} has no href")
    scheme = urlsplit(href).scheme.lower()
    if scheme in REMOTE_SCHEMES:
        return href
    if "://" in href or href.startswith(("/", "\\")) or scheme:
        if not allow_local:
            raise InputRasterError(f"asset {key!r} of STAC item {name} points at {href}, which is not an http(s), "
                                   "s3 or gs URL; a STAC item may name local files only with --allow-local-assets")
        return unquote(urlsplit(href).path) if scheme == "file" else href
    if _is_url(name):
        return urljoin(name, href)
    return str(Path(name).resolve().parent / href)
