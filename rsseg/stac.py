"""STAC items as raster inputs: which assets (and bands) of an item to read, and where they live.

A STAC item (https://github.com/radiantearth/stac-spec, ``item-spec``) is a GeoJSON Feature
whose ``assets`` map names to ``{"href", "type", "roles"}``; rsseg reads it with pystac.
Imagery catalogues (Maxar Open Data, Planetary Computer, Earth Search) name the display-ready
RGB COG ``visual``; that is the default, else the item's only raster asset. Sentinel-2 and
Landsat items publish one single-band COG per band instead (Earth Search: ``red``, ``green``,
``nir``...; Planetary Computer: ``B04``, ``B03``...), each described by the eo extension's
``eo:bands`` (a band ``name`` and a ``common_name``). A selection such as ``red,green,blue`` or
``B04,B03,B02`` names assets by key or bands by common name or band name;
:func:`rsseg.io.open_raster` stacks them into one raster whose bands carry the common names.
Relative hrefs resolve against the item's own location (a file or a URL), as the spec says.

An item is a file someone hands over, so what it may point at is limited: an asset href must be
relative (it resolves where the item lives) or an ``http(s)://``, ``s3://`` or ``gs://`` URL.
Absolute local paths, ``file://`` URLs and GDAL paths (``/vsizip/...``) would read a file on
this machine and report it as the item; they are refused unless the caller allows local assets
(``rsseg predict --allow-local-assets``). The item's JSON is fetched by rsseg itself, not by
pystac, within an overall time limit (:data:`FETCH_TIMEOUT_S`) and a size limit
(:data:`MAX_ITEM_BYTES`), following redirects to http(s) URLs only (:mod:`rsseg.http`).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urljoin, urlsplit

from rsseg.errors import ConfigError, InputNotFoundError, InputRasterError
from rsseg.http import fetch, is_http_url

if TYPE_CHECKING:
    import pystac

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


@dataclass(frozen=True)
class AssetBand:
    """One band (or every band) of the raster a selection of a STAC item reads."""

    #: the asset's key in the item
    asset: str
    #: where the asset's raster lives: a URL or a path, relative hrefs resolved
    href: str
    #: 1-based band of that raster; None: all of its bands (an asset named by its key)
    band: int | None
    #: the ``eo:bands`` common name of each band read (what the model-fit check compares; None:
    #: unstated): one name for a band, the asset's declared bands for a whole asset
    names: tuple[str | None, ...]


def is_stac_item(source: str | Path) -> bool:
    """Whether ``source`` (a path or URL) names a JSON file, which rsseg reads as a STAC item."""
    return urlsplit(str(source)).path.lower().endswith(".json")


def load_item(source: str | Path, timeout: float | None = None) -> pystac.Item:
    """The item from a local file or an http(s) URL (within ``timeout`` seconds, default
    :data:`FETCH_TIMEOUT_S`), read by pystac; one-line errors otherwise."""
    import pystac

    name = str(source)
    limit = FETCH_TIMEOUT_S if timeout is None else timeout
    try:
        if is_http_url(name):
            body = io.BytesIO()
            fetch(name, body, timeout=limit, max_bytes=MAX_ITEM_BYTES, what="STAC item",
                  too_large="is it an item (not a catalogue or a raster)?")
            text = body.getvalue().decode("utf-8")
        elif "://" in name:
            raise InputRasterError(f"cannot read STAC item {name}: only local files and http(s) URLs are supported; "
                                   "use the item's https URL")
        else:
            if not Path(name).is_file():
                raise InputNotFoundError(f"STAC item not found: {name}")
            text = Path(name).read_text(encoding="utf-8")
        data = json.loads(text)
    except (OSError, ValueError) as exc:
        if isinstance(exc, (InputRasterError, InputNotFoundError)):
            raise
        if isinstance(exc, TimeoutError) or "timed out" in str(exc):
            raise InputRasterError(f"cannot read STAC item {name}: the server did not answer within {limit:g} s; "
                                   "check the URL and the network") from None
        raise InputRasterError(f"cannot read STAC item {name}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    if not isinstance(data, dict) or not isinstance(data.get("assets"), dict):
        raise InputRasterError(f"{name} is not a STAC item (a JSON Feature with 'assets'); pass a raster or an item")
    try:
        return pystac.Item.from_dict(data, preserve_dict=False)
    except (pystac.STACError, pystac.STACTypeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        reason = f"missing {exc}" if isinstance(exc, KeyError) else (str(exc).splitlines() or [repr(exc)])[0].rstrip(".")
        raise InputRasterError(f"{name} is not a valid STAC item ({reason}); an item needs 'type': 'Feature', "
                               "'stac_version', 'id', 'properties' with a 'datetime', and 'assets' with an 'href' "
                               "each") from None


def _band_names(asset: pystac.Asset) -> list[tuple[str | None, str | None]]:
    """``(name, common name)`` of each band the asset declares: the eo extension's ``eo:bands``
    (STAC 1.0), else STAC 1.1's ``bands`` with ``eo:common_name``; empty if it declares none."""
    from pystac.extensions.eo import AssetEOExtension

    # read without requiring the item to list the eo schema: many hand-written items forget it
    if eo := AssetEOExtension(asset).bands:
        return [(band.properties.get("name"), band.common_name) for band in eo]  # a band without its (required) name still counts
    bands = asset.extra_fields.get("bands")
    if isinstance(bands, list):
        return [(b.get("name"), b.get("eo:common_name")) for b in bands if isinstance(b, dict)]
    return []


def _is_raster(asset: pystac.Asset) -> bool:
    return (asset.media_type or "").split(";")[0].strip() in _RASTER_TYPES


def _listing(item: pystac.Item) -> str:
    def describe(asset: pystac.Asset) -> str:
        common = [c for _, c in _band_names(asset) if c]
        return ", ".join([(asset.media_type or "?").split(";")[0].strip(), *common])

    return ", ".join(f"{key} ({describe(asset)})" for key, asset in item.assets.items()) or "none"


def _default_asset(item: pystac.Item, where: str) -> str:
    if DEFAULT_ASSET in item.assets:
        return DEFAULT_ASSET
    rasters = [key for key, asset in item.assets.items() if _is_raster(asset)]
    if len(rasters) == 1:
        return rasters[0]
    raise InputRasterError(f"{where} has no '{DEFAULT_ASSET}' asset; name one with --asset, or several bands "
                           f"as --asset red,green,blue (its assets: {_listing(item)})")


def _choose(item: pystac.Item, token: str, where: str) -> tuple[str, int | None]:
    """``(asset key, band)`` that ``token`` names: an asset key (all its bands), else a band whose
    ``eo:bands`` common name or name it is. A name several assets share goes to the single-band
    asset (a per-band COG rather than a band of ``visual``), then to a GeoTIFF (rather than a JP2
    copy of the same band); one still shared is refused."""
    if token in item.assets:
        return token, None
    wanted = token.lower()
    hits = [(key, i + 1) for key, asset in item.assets.items() if _is_raster(asset) or asset.media_type is None
            for i, names in enumerate(_band_names(asset)) if wanted in {(n or "").lower() for n in names}]
    for prefer in (lambda key: len(_band_names(item.assets[key])) == 1,
                   lambda key: "tiff" in (item.assets[key].media_type or "")):
        if len(hits) > 1 and (kept := [hit for hit in hits if prefer(hit[0])]):
            hits = kept
    if not hits:
        raise InputRasterError(f"{where} has no asset {token!r}; its assets: {_listing(item)}")
    if len(hits) > 1:
        raise InputRasterError(f"{where}: band {token!r} is in several assets ({', '.join(k for k, _ in hits)}); "
                               "name the assets by key with --asset")
    return hits[0]


def _resolve_href(name: str, key: str, href: str, allow_local: bool) -> str:
    """Where asset ``key`` of the item ``name`` lives; an href that names a local file by itself
    (an absolute path, ``file://``, a GDAL path such as ``/vsizip/...``) or another URL scheme is
    refused unless ``allow_local``."""
    if not href:
        raise InputRasterError(f"asset {key!r} of STAC item {name} has no href")
    scheme = urlsplit(href).scheme.lower()
    if scheme in REMOTE_SCHEMES:
        return href
    if "://" in href or href.startswith(("/", "\\")) or scheme:
        if not allow_local:
            raise InputRasterError(f"asset {key!r} of STAC item {name} points at {href}, which is not an http(s), "
                                   "s3 or gs URL; a STAC item may name local files only with --allow-local-assets")
        return unquote(urlsplit(href).path) if scheme == "file" else href
    if is_http_url(name):
        return urljoin(name, href)
    return str(Path(name).resolve().parent / href)


def asset_bands(source: str | Path, asset: str | None = None, *, allow_local: bool = False) -> list[AssetBand]:
    """The bands a selection ``asset`` of the STAC item ``source`` reads, in order.

    ``asset``: None (``visual``, else the only raster asset), an asset key, or several asset keys
    or band names separated by commas (``red,green,blue``, ``B04,B03,B02``; see :func:`_choose`).
    Hrefs are resolved and checked (:func:`_resolve_href`).
    """
    name = str(source)
    where = f"STAC item {name}"
    item = load_item(name)
    if asset is None:
        tokens = [_default_asset(item, where)]
    else:
        tokens = [token.strip() for token in asset.split(",")]
        if not all(tokens):
            raise ConfigError(f"--asset {asset!r} names an empty asset; list asset keys or band names separated "
                              "by commas, e.g. --asset red,green,blue")
    chosen = []
    for token in tokens:
        key, band = _choose(item, token, where)
        declared = _band_names(item.assets[key])
        href = _resolve_href(name, key, item.assets[key].href, allow_local)
        names = tuple(common for _, common in declared) if band is None else (declared[band - 1][1],)
        chosen.append(AssetBand(key, href, band, names))
    return chosen
