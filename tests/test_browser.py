"""End to end in a real browser: `streamlit run` the viewer, open it in headless Chromium over the
DevTools protocol, wait for the Leaflet map and the legend, and save a screenshot."""

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

from rsseg import viewer
from test_app import viewer_data  # noqa: F401 - shared session fixture (tiny checkpoint + small raster)

pytestmark = pytest.mark.slow
WAIT_S = 60


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
PROBE = """(() => {
  const frames = [...document.querySelectorAll('iframe')].map(f => f.contentDocument).filter(Boolean);
  const doc = frames.find(d => d.querySelector('.leaflet-container'));
  if (!doc) return null;
  return {
    leaflet: !!doc.querySelector('.leaflet-container'),
    legend: [...doc.querySelectorAll('#rsseg-legend .rsseg-legend-item')].map(e => e.textContent),
    images: doc.querySelectorAll('img.leaflet-image-layer').length,
    layers: [...doc.querySelectorAll('.leaflet-control-layers-overlays label')].map(e => e.textContent.trim()),
    table: !!document.querySelector('[data-testid="stDataFrame"]'),
  };
})()"""


def test_map_renders_in_chromium(viewer_data: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    _need("chromium", chromium is not None)
    _need("a local Leaflet (libjs-leaflet) for the offline map", viewer.local_leaflet() is not None)
    connect = pytest.importorskip("websockets.sync.client").connect  # websockets ships with streamlit

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
            page.call("Page.navigate", url=f"http://127.0.0.1:{port}/?raster=small.tif&model=models/m.ckpt&run=1")
            state = _wait(lambda: (s := page.js(PROBE)) and s["images"] >= 2 and s["table"] and s, "the map with both overlays")
            time.sleep(1.0)  # let the overlay PNGs paint before the screenshot
            shot = tmp_path / "viewer.png"
            shot.write_bytes(base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"]))
        print(f"screenshot: {shot}")
        assert state["leaflet"]
        assert state["legend"] == ["background", "building"]
        assert {"input image", "classes"} <= set(state["layers"])
        assert shot.stat().st_size > 10_000
    finally:
        for proc in (browser, server):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
