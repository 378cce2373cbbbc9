"""The folium map the viewer shows, and Leaflet served without a network.

streamlit-folium loads Leaflet (and folium's jQuery/Bootstrap extras) from public CDNs, so on an
offline workstation the map never appears. When a local Leaflet is found (``RSSEG_LEAFLET_DIR``,
or Debian/Ubuntu's ``libjs-leaflet`` in /usr/share/javascript/leaflet) it is inlined as data URLs
instead, images referenced by its CSS included, and the CDN-only extras the viewer does not use
are dropped. Without one the map falls back to the CDN (fine when online). The map's own extras
work offline too: Leaflet.draw (folium's Draw plugin, which loads it from cdnjs) is vendored in
``static/leaflet-draw`` and the swipe divider is rsseg's ``static/swipe.js``, both inlined.
"""

from __future__ import annotations

import base64
import functools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import folium
from branca.element import MacroElement
from folium.elements import JSCSSMixin
from folium.plugins import Draw
from jinja2 import Template

from rsseg.viewer.render import LEGEND_CLASS, LegendGroup, Overlay, legend_html, render_classes, render_image
from rsseg.viewer.tile_server import TileServer, class_layer, image_layer, tile_info

LEAFLET_DIRS = ("/usr/share/javascript/leaflet",)
STATIC = Path(__file__).parent / "static"

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


_CSS_IMAGE = re.compile(r"""url\(['"]?(images/[A-Za-z0-9_.-]+\.(png|svg))['"]?\)""")


def _inline_css(css_text: str, directory: Path) -> str:
    """CSS with its ``url(images/...)`` references replaced by data URLs (files inside ``directory`` only)."""

    def inline(match: re.Match) -> str:
        img = directory / match.group(1)
        ok = img.is_file() and img.resolve().is_relative_to(directory.resolve())
        mime = "image/svg+xml" if match.group(2) == "svg" else "image/png"
        return f"url({_data_url(mime, img.read_bytes())})" if ok else match.group(0)

    return _CSS_IMAGE.sub(inline, css_text)


@functools.lru_cache(maxsize=4)
def _load_assets(directory: str) -> LeafletAssets | None:
    d = Path(directory)
    js = next((d / n for n in ("leaflet.min.js", "leaflet.js") if (d / n).is_file()), None)
    css = d / "leaflet.css"
    if js is None or not css.is_file():
        return None
    css_text = _inline_css(css.read_text(encoding="utf-8"), d)
    return LeafletAssets(_data_url("text/javascript", js.read_bytes()), _data_url("text/css", css_text.encode()), str(d))


@functools.lru_cache(maxsize=1)
def leaflet_draw() -> LeafletAssets:
    """Leaflet.draw 1.0.4 (MIT), vendored in ``rsseg/viewer/static/leaflet-draw``: folium's Draw
    plugin otherwise loads it from cdnjs."""
    d = STATIC / "leaflet-draw"
    css = _inline_css((d / "leaflet.draw.css").read_text(encoding="utf-8"), d)
    return LeafletAssets(_data_url("text/javascript", (d / "leaflet.draw.js").read_bytes()),
                         _data_url("text/css", css.encode()), str(d))


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


@dataclass(frozen=True)
class MapLayer:
    """One raster layer of the map: XYZ tiles (``tiles`` URL template, full resolution) or a
    decimated ``overlay``. ``side`` puts it on the "left" or "right" of the swipe divider (None:
    shown across the whole map)."""

    name: str
    bounds: tuple[tuple[float, float], tuple[float, float]]
    tiles: str | None = None
    overlay: Overlay | None = None
    max_zoom: int = 22
    #: lowest zoom the tile server renders (:func:`~rsseg.viewer.tile_server.min_zoom`)
    min_zoom: int = 0
    opacity: float = 1.0
    side: str | None = None
    show: bool = True

    @classmethod
    def from_overlay(cls, name: str, overlay: Overlay, **kwargs: Any) -> MapLayer:
        return cls(name, overlay.bounds, overlay=overlay, **kwargs)


SWIPE_PANES = {"left": ("rsseg-left", 250), "right": ("rsseg-right", 260)}


class Swipe(JSCSSMixin, MacroElement):
    """The side-by-side divider (``static/swipe.js``, rsseg's own, inlined so it works offline)."""

    _template = Template("""{% macro script(this, kwargs) %}
        window.rssegSwipeControl = rssegSwipe({{ this._parent.get_name() }}, "{{ this.left }}", "{{ this.right }}", {{ this.value }});
    {% endmacro %}""")

    def __init__(self, value: float = 0.5) -> None:
        super().__init__()
        self._name = "RssegSwipe"
        self.left, self.right, self.value = SWIPE_PANES["left"][0], SWIPE_PANES["right"][0], float(value)
        self.default_js = [("rsseg_swipe", _data_url("text/javascript", (STATIC / "swipe.js").read_bytes()))]
        self.default_css = []


class LegendSync(MacroElement):
    """Keeps the legend's groups (:func:`~rsseg.viewer.render.legend_html`) in step with the layer
    control: a group shows while one of its layers is on, the legend while one group shows."""

    _template = Template("""{% macro script(this, kwargs) %}
        (function (map, on) {
            function sync() {
                const legend = document.getElementById("{{ this.legend_id }}");
                if (!legend) return;
                let any = false;
                legend.querySelectorAll(".{{ this.legend_id }}-group").forEach(function (group) {
                    const layers = JSON.parse(group.dataset.layers);
                    const shown = layers.length === 0 || layers.some(function (name) { return on.has(name); });
                    group.style.display = shown ? "" : "none";
                    any = any || shown;
                });
                legend.style.display = any ? "" : "none";
            }
            map.on("overlayadd", function (e) { on.add(e.name); sync(); });
            map.on("overlayremove", function (e) { on.delete(e.name); sync(); });
        })({{ this._parent.get_name() }}, new Set({{ this.visible|tojson }}));
    {% endmacro %}""")

    def __init__(self, visible: Sequence[str]) -> None:
        super().__init__()
        self._name = "RssegLegendSync"
        self.legend_id, self.visible = LEGEND_CLASS, list(visible)


def build_map(
    *,
    layers: Sequence[MapLayer] = (),
    polygons: dict[str, Any] | None = None,
    legend: Sequence[LegendGroup] = (),
    basemap: str = "none",
    leaflet: LeafletAssets | None = None,
    swipe: bool = False,
    draw: bool = False,
    area: dict[str, Any] | None = None,
) -> folium.Map:
    """A folium map of raster layers (bottom first) and polygons, with layer control and legend.

    ``swipe`` adds the side-by-side divider between the layers whose ``side`` is "left" and
    "right"; ``draw`` adds folium's Draw plugin (rectangle and polygon, Leaflet.draw served
    locally) so the analyst can draw an area of interest; ``area`` (GeoJSON geometry in WGS84) outlines
    the one drawn last, which a re-rendered map would otherwise forget. ``legend`` groups show while
    one of their layers is on, following the layer control.
    """
    if basemap not in BASEMAPS:
        raise ValueError(f"unknown basemap {basemap!r}; choose one of {list(BASEMAPS)}")
    max_zoom = max([layer.max_zoom for layer in layers if layer.tiles] or [22])
    # zooming out stops where the last tile layer would have to read more than its overviews allow
    min_zoom = min([layer.min_zoom for layer in layers if layer.tiles] or [0])
    # folium hands its min_zoom to a default basemap only; Leaflet's own option goes in as is
    m = folium.Map(tiles=None, control_scale=True, prefer_canvas=True, max_zoom=max_zoom, minZoom=min_zoom)
    if leaflet is not None:
        _use_assets(m, leaflet)
    if (tiles := BASEMAPS[basemap]) is not None:
        folium.TileLayer(tiles=tiles[0], attr=tiles[1], name=basemap, max_zoom=max_zoom, max_native_zoom=19).add_to(m)
    if swipe:
        for pane, z in SWIPE_PANES.values():
            folium.map.CustomPane(pane, z_index=z).add_to(m)
    for layer in layers:
        # outside the swipe, tiles stay in Leaflet's tile pane and overlays in its overlay pane
        pane = {"pane": SWIPE_PANES[layer.side][0]} if swipe and layer.side in SWIPE_PANES else {}
        (s, w), (n, e) = layer.bounds
        if layer.tiles is not None:
            folium.TileLayer(tiles=layer.tiles, attr="rsseg", name=layer.name, overlay=True, show=layer.show,
                             max_zoom=max_zoom, min_zoom=layer.min_zoom, opacity=layer.opacity, bounds=[[s, w], [n, e]],
                             **pane).add_to(m)
        elif layer.overlay is not None:
            folium.raster_layers.ImageOverlay(layer.overlay.data_url(), bounds=[[s, w], [n, e]], name=layer.name,
                                              opacity=layer.opacity, show=layer.show, pixelated=True, **pane).add_to(m)
    if polygons is not None and polygons.get("features"):
        folium.GeoJson(
            polygons, name="polygons", show=False,
            style_function=lambda f: {"color": f["properties"].get("fill", "#3388ff"), "weight": 1, "fillOpacity": 0.0},
        ).add_to(m)
    if area is not None:
        folium.GeoJson(area, name="drawn area",
                       style_function=lambda f: {"color": "#ffff00", "weight": 2, "dashArray": "6 4", "fillOpacity": 0.0}).add_to(m)
    if legend:
        visible = [layer.name for layer in layers if layer.show]
        m.get_root().html.add_child(folium.Element(legend_html(legend, visible)))
        LegendSync(visible).add_to(m)
    if swipe:
        Swipe().add_to(m)
    if draw:
        tool = Draw(draw_options={"polyline": False, "circle": False, "marker": False, "circlemarker": False,
                                  "polygon": True, "rectangle": {"showArea": False}},
                    edit_options={"edit": False})
        assets = leaflet_draw()
        tool.default_js, tool.default_css = [("leaflet_draw_js", assets.js_url)], [("leaflet_draw_css", assets.css_url)]
        tool.add_to(m)
    # inside st_folium's iframe: the map fills the frame (whose height the app sets)
    m.get_root().html.add_child(folium.Element("<style>body {overflow: hidden} #map_div, .folium-map {height: 100vh !important}</style>"))
    folium.LayerControl(collapsed=False).add_to(m)
    if layers:
        (s, w), (n, e) = layers[0].bounds
        m.fit_bounds([[s, w], [n, e]])
    return m


def raster_layer(name: str, path: str | Path, *, colors: list[str] | None = None, hidden: tuple[int, ...] = (),
                 server: TileServer | None = None, **kwargs: Any) -> MapLayer:
    """A raster as a map layer: full-resolution tiles from ``server`` when there is one, else a
    decimated overlay. ``colors`` given: a class raster (``hidden`` ids transparent); else an image."""
    if server is not None:
        info = tile_info(path)
        spec = class_layer(path, colors, hidden) if colors is not None else image_layer(path)
        return MapLayer(name, info.bounds, tiles=server.register(spec), max_zoom=info.max_zoom, min_zoom=info.min_zoom,
                        **kwargs)
    overlay = render_classes(path, colors, hidden=hidden) if colors is not None else render_image(path)
    return MapLayer.from_overlay(name, overlay, **kwargs)
