"""STAC items as raster inputs: pick one asset of an item and return where its raster lives.

A STAC item (https://github.com/radiantearth/stac-spec, ``item-spec``) is a GeoJSON Feature
whose ``assets`` map names to ``{"href", "type", "roles"}``. Imagery catalogues (Maxar Open
Data, Planetary Computer, Earth Search) name the display-ready RGB COG ``visual``; that is the
default, any other asset is chosen by name. Relative hrefs resolve against the item's own
location (a file or a URL), as the spec says. Plain JSON: no STAC library is needed to read one
item.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from rsseg.errors import InputNotFoundError, InputRasterError

#: the asset read when none is named
DEFAULT_ASSET = "visual"
_RASTER_TYPES = ("image/tiff", "image/jp2", "image/vnd.stac.geotiff")


def is_stac_item(source: str | Path) -> bool:
    """Whether ``source`` (a path or URL) names a JSON file, which rsseg reads as a STAC item."""
    return urlsplit(str(source)).path.lower().endswith(".json")


def _is_url(source: str) -> bool:
    return urlsplit(source).scheme in ("http", "https")


def load_item(source: str | Path, timeout: float = 30.0) -> dict[str, Any]:
    """The item's JSON from a local file or an http(s) URL; one-line errors otherwise."""
    name = str(source)
    try:
        if _is_url(name):
            from urllib.request import urlopen

            with urlopen(name, timeout=timeout) as response:  # noqa: S310 - http(s) only, checked above
                text = response.read().decode("utf-8")
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


def asset_href(source: str | Path, asset: str | None = None) -> str:
    """Where the chosen asset's raster lives (URL or path), relative hrefs resolved against the
    item's location."""
    name = str(source)
    item = load_item(name)
    key = pick_asset(item, asset, f"STAC item {name}")
    href = item["assets"][key].get("href")
    if not href:
        raise InputRasterError(f"asset {key!r} of STAC item {name} has no href")
    if "://" in href or href.startswith("/"):
        return href
    if _is_url(name):
        return urljoin(name, href)
    return str(Path(name).resolve().parent / href)
