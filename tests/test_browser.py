"""End to end in a real browser: `rsseg app` serves the viewer, headless Chromium opens it over the
DevTools protocol; the test waits for the tiled map and the legend, switches the error layer on and
off (the legend follows), scrolls the panel (the map stays in view, the tables fit), drags the swipe
divider, clicks a pixel, zooms to full resolution, draws an area with Leaflet.draw's rectangle tool and predicts inside
it, saving screenshots (to ``RSSEG_SCREENSHOT_DIR`` when set) along the way."""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_app import viewer_data  # noqa: F401 - shared session fixture (tiny checkpoint + small raster)

from rsseg import viewer

pytestmark = pytest.mark.slow
WAIT_S = 300


def _need(what: str, ok: bool) -> None:
    if not ok:
        if os.environ.get("RSSEG_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{what} is missing but RSSEG_REQUIRE_BROWSER=1")
        pytest.skip(f"{what} is missing (apt-get install chromium libjs-leaflet)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check, what: str, timeout: float = WAIT_S):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - localhost only
            return r.status == 200
    except OSError:
        return False


class _Page:
    """A minimal DevTools-protocol client for one page target."""

    def __init__(self, ws) -> None:  # noqa: ANN001 - a websockets.sync connection
        self.ws = ws
        self.ids = itertools.count(1)

    def call(self, method: str, **params):  # noqa: ANN003, ANN201
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=WAIT_S))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def js(self, expression: str):  # noqa: ANN201
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")


# Streamlit serves component iframes from its own origin, so the page can read inside them.
FRAME = """[...document.querySelectorAll('iframe')].map(f => f.contentWindow).find(w => w && w.document.querySelector('.leaflet-container'))"""
PROBE = """(() => {
  const win = %s;
  if (!win || !win.map) return null;
  const doc = win.document;
  const tiles = [...doc.querySelectorAll('img.leaflet-tile')].filter(i => i.src.includes('/tiles/'));
  return {
    legend: [...doc.querySelectorAll('#rsseg-legend .rsseg-legend-item')].filter(e => e.getClientRects().length).map(e => e.textContent),
    tiles: tiles.filter(i => i.complete && i.naturalWidth === 256).map(i => i.src),
    overlays: doc.querySelectorAll('img.leaflet-image-layer').length,
    layers: [...doc.querySelectorAll('.leaflet-control-layers-overlays label')].map(e => e.textContent.trim()),
    draw: !!doc.querySelector('.leaflet-draw-draw-rectangle'),
    swipe: !!doc.querySelector('.rsseg-swipe-range'),
    zoom: win.map.getZoom(), maxZoom: win.map.getMaxZoom(),
    table: !!document.querySelector('[data-testid="stDataFrame"]'),
    text: document.body.innerText,
  };
})()""".replace("%s", FRAME)


def _shot(page: _Page, path: Path) -> Path:
    time.sleep(1.0)  # let the tiles paint
    path.write_bytes(base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"]))
    return path


def _map_point(page: _Page, lat: float, lon: float) -> tuple[float, float]:
    """Page coordinates (CSS px) of a lat/lon on the map inside the component iframe."""
    return tuple(page.js(f"""(() => {{
      const win = {FRAME};
      const frame = [...document.querySelectorAll('iframe')].find(f => f.contentWindow === win).getBoundingClientRect();
      const box = win.map.getContainer().getBoundingClientRect();
      const p = win.map.latLngToContainerPoint([{lat}, {lon}]);
      return [frame.left + box.left + p.x, frame.top + box.top + p.y];
    }})()"""))


# where the map and the panel are on the page, how far the panel has scrolled, and whether each table
# inside it needs a horizontal scroll bar (scroll width beyond its visible width)
LAYOUT = """(() => {
  const panel = document.querySelector('.st-key-panel');
  const frame = [...document.querySelectorAll('iframe')].find(f => f.contentWindow === %s);
  if (!panel || !frame) return null;
  const scroller = [panel, ...panel.querySelectorAll('*')].find(
    e => e.scrollHeight > e.clientHeight + 1 && ['auto', 'scroll'].includes(getComputedStyle(e).overflowY));
  const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  return {map: box(frame), panel: box(panel), view: [innerWidth, innerHeight], scrolled: scroller ? scroller.scrollTop : -1,
          tables: [...panel.querySelectorAll('[data-testid="stDataFrame"]')].map(
            t => { const s = t.querySelector('.dvn-scroller'); return s ? [s.scrollWidth, s.clientWidth] : null; })};
})()""".replace("%s", FRAME)


def _mouse(page: _Page, kind: str, x: float, y: float) -> None:
    page.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", buttons=1 if kind != "mouseReleased" else 0,
              clickCount=1)


def _latlon(path: Path, row: float, col: float) -> tuple[float, float]:
    import rasterio
    from pyproj import Transformer

    with rasterio.open(path) as src:
        x, y = src.xy(row, col)
        lon, lat = Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True).transform(x, y)
    return lat, lon


def test_map_renders_in_chromium(viewer_data: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    _need("chromium", chromium is not None)
    _need("a local Leaflet (libjs-leaflet) for the offline map", viewer.local_leaflet() is not None)
    _need("rio-tiler (the viewer extra) for full-resolution tiles", viewer.tiles_available())
    connect = pytest.importorskip("websockets.sync.client").connect  # websockets ships with streamlit
    shots = Path(os.environ.get("RSSEG_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)

    port = _free_port()
    # through the real `rsseg app` command (it execs `streamlit run`, so terminate() reaches the server)
    server = subprocess.Popen(
        [sys.executable, "-m", "rsseg.cli.main", "app", "--headless", "--port", str(port),
         "--data-dir", str(viewer_data["data"]), "--cache-dir", str(tmp_path / "cache")],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "w"),  # noqa: SIM115
    )
    profile = tmp_path / "chromium-profile"
    browser = subprocess.Popen(
        [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-extensions", "--window-size=1400,900",
         f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait(lambda: _http_ok(f"http://127.0.0.1:{port}/_stcore/health"), "the Streamlit server")
        active = _wait(lambda: (profile / "DevToolsActivePort").is_file() and (profile / "DevToolsActivePort").read_text().split(), "Chromium DevTools")
        with urllib.request.urlopen(f"http://127.0.0.1:{active[0]}/json/list", timeout=5) as r:  # noqa: S310
            target = next(t for t in json.load(r) if t["type"] == "page")
        with connect(target["webSocketDebuggerUrl"], max_size=64 * 2**20, open_timeout=10) as ws:
            page = _Page(ws)
            page.call("Page.enable")
            page.call("Page.navigate", url=f"http://127.0.0.1:{port}/?raster=small.tif&model=models/m.ckpt"
                                           "&reference=small_mask.tif&swipe=input%20%7C%20classes&run=1")
            state = _wait(lambda: (s := page.js(PROBE)) and len(s["tiles"]) >= 2 and s["table"] and s["swipe"] and s,
                          "the map with its tiles, the swipe and the area table")
            shot = _shot(page, shots / "viewer.png")
            assert state["overlays"] == 0  # tiles, not the capped overlays
            assert {"input image", "classes", "errors: building"} <= set(state["layers"])
            assert state["draw"]  # Leaflet.draw loaded without a CDN
            assert shot.stat().st_size > 10_000

            # the legend lists the layers that are on: the error rows appear with the error layer only
            assert state["legend"] == ["background (not drawn)", "building"]
            toggle = f"""(() => {{ const win = {FRAME};
              [...win.document.querySelectorAll('.leaflet-control-layers-overlays label')]
                .find(l => l.textContent.trim() === 'errors: building').querySelector('input').click(); }})()"""
            page.js(toggle)
            legend = _wait(lambda: (s := page.js(PROBE)) and len(s["legend"]) == 4 and s["legend"], "the error rows in the legend")
            assert legend == ["background (not drawn)", "building", "false positive", "false negative"]
            _shot(page, shots / "viewer_errors.png")
            page.js(toggle)
            _wait(lambda: (s := page.js(PROBE)) and len(s["legend"]) == 2, "the error rows to leave the legend")

            # map and panel side by side at the window's height; the panel scrolls on its own, the map stays
            before = page.js(LAYOUT)
            width, height = before["view"]
            assert before["map"][2] - before["map"][0] > 0.45 * width  # the map is the larger part of the window
            assert before["map"][2] <= before["panel"][0] and before["panel"][2] <= width
            x = (before["panel"][0] + before["panel"][2]) / 2
            page.call("Input.dispatchMouseEvent", type="mouseWheel", x=x, y=height / 2, deltaX=0, deltaY=3000)
            after = _wait(lambda: (s := page.js(LAYOUT)) and s["scrolled"] > 0 and s, "the panel to scroll")
            assert after["map"] == before["map"] and after["map"][1] >= 0 and after["map"][3] <= height
            assert after["tables"] and all(t is not None and t[0] <= t[1] + 1 for t in after["tables"]), after["tables"]
            _shot(page, shots / "viewer_panel_scrolled.png")
            page.call("Input.dispatchMouseEvent", type="mouseWheel", x=x, y=height / 2, deltaX=0, deltaY=-3000)

            # swipe: the classes pane is clipped right of the divider
            clip = page.js(f"""(() => {{ const win = {FRAME};
              const r = win.document.querySelector('.rsseg-swipe-range'); r.value = 0.3;
              r.dispatchEvent(new win.Event('input'));
              const size = win.map.getSize(), nw = win.map.containerPointToLayerPoint([0, 0]);
              return [win.map.getPane('rsseg-right').style.clip, nw.x + size.x * 0.3,
                      parseFloat(win.document.querySelector('.rsseg-swipe-divider').style.left), size.x]; }})()""")
            cut = float(clip[0].split("(")[1].split(",")[3].strip().rstrip("px)"))
            assert clip[0].startswith("rect(") and cut == pytest.approx(clip[1], abs=1)
            assert clip[2] == pytest.approx(0.3 * clip[3], abs=1)
            _shot(page, shots / "viewer_swipe.png")

            # click-to-inspect: class, probability and the reference under the clicked pixel
            x, y = _map_point(page, *_latlon(viewer_data["raster"], 200.5, 200.5))
            for kind in ("mousePressed", "mouseReleased"):
                _mouse(page, kind, x, y)
            text = _wait(lambda: (t := page.js("document.body.innerText")) and "Class at" in t and t, "the clicked class")
            line = next(t for t in text.splitlines() if "Class at" in t)
            assert "probability 0." in line or "probability 1.00" in line
            assert "reference:" in line and ("building" in line or "background" in line)

            # full zoom: tiles at the map's highest zoom come from the tile server at native resolution
            page.js(f"(() => {{ const win = {FRAME}; win.map.setZoom(win.map.getMaxZoom(), {{animate: false}}); }})()")
            zoomed = _wait(lambda: (s := page.js(PROBE)) and s["zoom"] == s["maxZoom"]
                           and [u for u in s["tiles"] if f"/{s['maxZoom']}/" in u] and s, "tiles at full zoom")
            assert zoomed["maxZoom"] == viewer.tile_info(viewer_data["raster"]).max_zoom
            _shot(page, shots / "viewer_fullzoom.png")
            page.js(f"(() => {{ const win = {FRAME}; win.map.setZoom(win.map.getMaxZoom() - 3, {{animate: false}}); }})()")
            time.sleep(0.5)

            # draw a rectangle with Leaflet.draw's own tool, then predict inside it only
            page.js(f"{FRAME}.document.querySelector('.leaflet-draw-draw-rectangle').click()")
            (x0, y0), (x1, y1) = (_map_point(page, *_latlon(viewer_data["raster"], r, c)) for r, c in ((60, 60), (140, 140)))
            _mouse(page, "mousePressed", x0, y0)
            for f in (0.25, 0.5, 0.75, 1.0):
                _mouse(page, "mouseMoved", x0 + f * (x1 - x0), y0 + f * (y1 - y0))
            _mouse(page, "mouseReleased", x1, y1)
            enabled = """(() => { const l = [...document.querySelectorAll('label')].find(l => l.innerText.includes('Drawn area'));
              const i = l && l.querySelector('input'); if (!i || i.disabled) return false; l.click(); return true; })()"""
            _wait(lambda: page.js(enabled), "the drawn area to reach the app")
            time.sleep(1.0)
            page.js("[...document.querySelectorAll('button')].find(b => b.innerText.includes('Run prediction')).click()")
            text = _wait(lambda: (t := page.js("document.body.innerText")) and "inside the drawn area only" in t and t,
                         "the prediction inside the drawn area")
            pixels = int(next(t for t in text.splitlines() if "inside the drawn area only" in t).split(":")[1].split("px")[0]
                         .replace(",", ""))
            assert 70 * 70 < pixels < 90 * 90  # about the 80 x 80 px drawn, not the 256 x 256 raster
            _shot(page, shots / "viewer_area.png")
        print(f"screenshots: {shots}")
    finally:
        for proc in (browser, server):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
