"""The folium map the viewer shows, and Leaflet served without a network.

streamlit-folium loads Leaflet (and folium's jQuery/Bootstrap extras) from public CDNs, so on an
offline workstation the map never appears. When a local Leaflet is found (``RSSEG_LEAFLET_DIR``,
or Debian/Ubuntu's ``libjs-leaflet`` in /usr/share/javascript/leaflet) it is inlined as data URLs
instead, images referenced by its CSS included, and the CDN-only extras the viewer does not use
are dropped. Without one the map falls back to the CDN (fine when online).
"""

from __future__ import annotations

import base64
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import folium

from rsseg.viewer.render import Overlay

LEAFLET_DIRS = ("/usr/share/javascript/leaflet",)

#: basemap label -> (tile URL, attribution); "none" works offline and is the default
BASEMAPS: dict[str, tuple[str, str] | None] = {
    "none": None,
    "OpenStreetMap (online)": ("https://tile.openstreetmap.org/{z}/{x}/{y}.png", "&copy; OpenStreetMap contributors"),
    "Esri World Imagery (online)": (
        "https://server.arcgisonline.com/ArcGIS/rest/services/World_Imagery/MapServer/tile/{z}/{y}/{x}",
        "Tiles &copy; Esri, Maxar, Earthstar Geographics",
    ),
}


@dataclass(frozen=True)
class LeafletAssets:
    js_url: str
    css_url: str
    source: str


def _data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


@functools.lru_cache(maxsize=4)
def _load_assets(directory: str) -> LeafletAssets | None:
    d = Path(directory)
    js = next((d / n for n in ("leaflet.min.js", "leaflet.js") if (d / n).is_file()), None)
    css = d / "leaflet.css"
    if js is None or not css.is_file():
        return None
    css_text = css.read_text(encoding="utf-8")

    def inline(match: re.Match) -> str:
        img = d / match.group(1)
        ok = img.is_file() and img.resolve().is_relative_to(d.resolve())
        return f"url({_data_url('image/png', img.read_bytes())})" if ok else match.group(0)

    css_text = re.sub(r"url\((images/[A-Za-z0-9_.-]+\.png)\)", inline, css_text)
    return LeafletAssets(_data_url("text/javascript", js.read_bytes()), _data_url("text/css", css_text.encode()), str(d))


def local_leaflet() -> LeafletAssets | None:
    """Leaflet from ``RSSEG_LEAFLET_DIR`` or the system's libjs-leaflet; None when neither exists."""
    candidates = [os.environ["RSSEG_LEAFLET_DIR"]] if os.environ.get("RSSEG_LEAFLET_DIR") else []
    for directory in [*candidates, *LEAFLET_DIRS]:
        if (assets := _load_assets(directory)) is not None:
            return assets
    return None


def _use_assets(m: folium.Map, assets: LeafletAssets) -> None:
    # st_folium collects every element's default_js/default_css; instance attributes shadow
    # folium's class-level CDN lists, and none of the elements used here need more than Leaflet
    m.default_js = [("leaflet", assets.js_url)]
    m.default_css = [("leaflet_css", assets.css_url)]


def build_map(
    *,
    image: Overlay | None = None,
    classes: Overlay | None = None,
    polygons: dict[str, Any] | None = None,
    legend: str | None = None,
    basemap: str = "none",
    opacity: float = 0.6,
    leaflet: LeafletAssets | None = None,
) -> folium.Map:
    """A folium map of the input image, class overlay and polygons, with layer control and legend."""
    if basemap not in BASEMAPS:
        raise ValueError(f"unknown basemap {basemap!r}; choose one of {list(BASEMAPS)}")
    m = folium.Map(tiles=None, control_scale=True, prefer_canvas=True)
    if leaflet is not None:
        _use_assets(m, leaflet)
    if (tiles := BASEMAPS[basemap]) is not None:
        folium.TileLayer(tiles=tiles[0], attr=tiles[1], name=basemap, max_zoom=22, max_native_zoom=19).add_to(m)
    shown = [o for o in (image, classes) if o is not None]
    if image is not None:
        folium.raster_layers.ImageOverlay(image.data_url(), bounds=[list(b) for b in image.bounds], name="input image").add_to(m)
    if classes is not None:
        folium.raster_layers.ImageOverlay(
            classes.data_url(), bounds=[list(b) for b in classes.bounds], name="classes", opacity=opacity, pixelated=True
        ).add_to(m)
    if polygons is not None and polygons.get("features"):
        folium.GeoJson(
            polygons, name="polygons",
            style_function=lambda f: {"color": f["properties"].get("fill", "#3388ff"), "weight": 1, "fillOpacity": 0.0},
        ).add_to(m)
    if legend:
        m.get_root().html.add_child(folium.Element(legend))
    folium.LayerControl(collapsed=False).add_to(m)
    if shown:
        (s, w), (n, e) = shown[0].bounds
        m.fit_bounds([[s, w], [n, e]])
    return m
