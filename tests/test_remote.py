"""Rasters where analysts keep them: COGs by URL (range requests against a local HTTP server on
127.0.0.1), STAC items (file or URL, ``visual`` or a named asset), s3:// and gs:// names."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
import torch
from click.testing import CliRunner
from conftest import uint8_contract, write_raster
from rasterio.windows import Window
from torch import nn

from rsseg.checkpoint import ModelMeta, save_model
from rsseg.cli.main import main
from rsseg.config import Config, ModelConfig
from rsseg.errors import ConfigError, FallbackWarning, InputFitWarning, InputNotFoundError, InputRasterError
from rsseg.inference import Predictor, predict_file
from rsseg.io import gdal_path, open_raster, source_stem
from rsseg.models import build_model


class RangeServer:
    """Serves a folder on 127.0.0.1 with HTTP range requests (206 Partial Content), counting the
    bytes it sends per file. Python's own handler ignores ``Range`` and always sends the whole file;
    so does this one with ``ranges=False`` (a server without range support: 200 and the whole file)."""

    def __init__(self, root: Path, ranges: bool = True) -> None:
        self.root, self.sent, self.requests = root, {}, []
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args, **kw):
                super().__init__(*args, directory=str(root), **kw)

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                path = Path(self.translate_path(self.path))
                if not path.is_file():
                    self.send_error(404)
                    return
                data, size = path.read_bytes(), path.stat().st_size
                match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "")) if ranges else None
                server.requests.append((path.name, self.headers.get("Range")))
                if match:
                    start = int(match.group(1))
                    end = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
                    if start >= size:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.end_headers()
                        return
                    body = data[start:end + 1]
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                else:
                    body = data
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                if ranges:
                    self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:  # the client hung up after the headers (a probe)
                    return
                server.sent[path.name] = server.sent.get(path.name, 0) + len(body)

            def do_HEAD(self):
                path = Path(self.translate_path(self.path))
                if not path.is_file():
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(path.stat().st_size))
                if ranges:
                    self.send_header("Accept-Ranges", "bytes")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True  # a client that keeps a connection open must not block the shutdown
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> RangeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path) -> Iterator[tuple[RangeServer, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    with RangeServer(root) as server:  # a new port per test: GDAL's /vsicurl/ cache never serves an old file
        yield server, root


#: what pystac needs of an item beside its assets
ITEM_FIELDS = {"geometry": None, "properties": {"datetime": "2024-05-01T10:00:00Z"}}


def cog(path: Path, data: np.ndarray, **kw) -> Path:
    tmp = write_raster(path.with_suffix(".plain.tif"), data, **kw)
    rasterio.shutil.copy(str(tmp), str(path), driver="COG", BLOCKSIZE="256", COMPRESS="DEFLATE")
    tmp.unlink()
    return path


def test_url_names_map_to_gdal_virtual_file_systems():
    assert gdal_path("https://example.org/a/scene.tif") == "/vsicurl/https://example.org/a/scene.tif"
    assert gdal_path("https:/example.org/a/scene.tif") == "/vsicurl/https://example.org/a/scene.tif"  # Path-folded
    assert gdal_path("s3://bucket/key/scene.tif") == "/vsis3/bucket/key/scene.tif"
    assert gdal_path("gs://bucket/scene.tif") == "/vsigs/bucket/scene.tif"
    assert gdal_path("/data/scene.tif") == "/data/scene.tif" and gdal_path("/vsizip/a.zip/b.tif") == "/vsizip/a.zip/b.tif"
    assert source_stem("https://example.org/a/scene.tif?token=x#y") == "scene"
    assert source_stem("s3://bucket/dir/T33.tif") == "T33" and source_stem("/data/x.tif") == "x"


def test_a_window_of_a_large_remote_cog_fetches_only_its_blocks(served):
    server, root = served
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (3, 2048, 2048), dtype=np.uint8)  # noise: incompressible, ~12.6 MB
    path = cog(root / "big.tif", data)
    size = path.stat().st_size
    with open_raster(f"{server.url}/big.tif") as src:
        assert src.shape == (2048, 2048) and src.count == 3
        window = src.read(window=Window(1000, 1000, 200, 200))
    assert np.array_equal(window, data[:, 1000:1200, 1000:1200])
    sent = server.sent["big.tif"]
    # a 200 px window spans 2 x 2 of the 256 px blocks: ~4 x 197 kB of 12.6 MB, plus the header
    print(f"served {sent} of {size} bytes ({100 * sent / size:.1f}%) in {len(server.requests)} requests")
    assert sent < 0.1 * size, (sent, size)
    assert all(r is not None for name, r in server.requests if name == "big.tif")  # every request was a range


def test_missing_url_and_bad_item_are_one_line_errors(served, tmp_path):
    server, root = served
    with pytest.raises(InputRasterError, match=r"cannot read input raster http://127\.0\.0\.1:\d+/nope\.tif"):
        open_raster(f"{server.url}/nope.tif")
    (tmp_path / "not_item.json").write_text(json.dumps({"type": "FeatureCollection"}))
    with pytest.raises(InputRasterError, match="is not a STAC item"):
        open_raster(tmp_path / "not_item.json")
    with pytest.raises(InputNotFoundError, match="STAC item not found"):
        open_raster(tmp_path / "missing.json")


def _meta() -> ModelMeta:
    return ModelMeta(classes=["background", "building"], colors=["#000000", "#ff0000"], bands=["red", "green", "blue"],
                     mean=[0.5] * 3, std=[0.25] * 3, patch_size=64, gsd=2.0, **uint8_contract())


def test_predict_from_url_and_stac_items_equals_the_local_file(served, tmp_path):
    server, root = served
    rng = np.random.default_rng(1)
    data = rng.integers(0, 255, (3, 150, 170), dtype=np.uint8)
    cog(root / "scene.tif", data)
    torch.manual_seed(0)
    p = Predictor.from_model(nn.Conv2d(3, 2, 3, padding=1).eval(), _meta(), tile=64, overlap=16, batch=2, device="cpu")
    local = predict_file(p, root / "scene.tif", tmp_path / "local.tif")
    remote = predict_file(p, f"{server.url}/scene.tif", tmp_path / "remote.tif")
    assert remote.report["input"] == f"{server.url}/scene.tif"
    # a STAC item beside the COG with a relative href, served over HTTP; and a local item naming its asset
    item = {"type": "Feature", "stac_version": "1.0.0", "id": "scene", **ITEM_FIELDS, "assets": {
        "thumbnail": {"href": "thumb.png", "type": "image/png"},
        "visual": {"href": "./scene.tif", "type": "image/tiff; application=geotiff; profile=cloud-optimized"}}}
    (root / "item.json").write_text(json.dumps(item))
    stac_remote = predict_file(p, f"{server.url}/item.json", tmp_path / "stac_remote.tif")
    item["assets"] = {"rgb": {"href": f"{server.url}/scene.tif", "type": "image/tiff"},
                      "thumbnail": {"href": "thumb.png", "type": "image/png"}}
    (tmp_path / "item.json").write_text(json.dumps(item))
    predict_file(p, tmp_path / "item.json", tmp_path / "stac_only_raster.tif")  # no 'visual': the only raster asset
    predict_file(p, tmp_path / "item.json", tmp_path / "stac_named.tif", asset="rgb")
    with pytest.raises(InputRasterError, match=r"no asset 'nir'; its assets: rgb \(image/tiff\), thumbnail"):
        predict_file(p, tmp_path / "item.json", tmp_path / "x.tif", asset="nir")
    with rasterio.open(local.output_path) as ref:
        expected, grid = ref.read(1), (ref.crs, ref.transform)
    for name in ("remote", "stac_remote", "stac_only_raster", "stac_named"):
        with rasterio.open(tmp_path / f"{name}.tif") as out:
            assert np.array_equal(out.read(1), expected) and (out.crs, out.transform) == grid, name
    assert stac_remote.report["width"] == 170


def test_cli_reads_urls_and_names_outputs_after_the_url_file(served, tmp_path):
    server, root = served
    rng = np.random.default_rng(2)
    for name in ("north", "south"):
        cog(root / f"{name}.tif", rng.integers(0, 255, (3, 64, 80), dtype=np.uint8))
    model = build_model(ModelConfig(), num_classes=2, in_channels=3).eval()
    meta = _meta()
    meta.config = Config().to_dict()
    ckpt = save_model(tmp_path / "m.ckpt", model, meta)
    res = CliRunner().invoke(main, ["predict", f"{server.url}/north.tif?v=1", f"{server.url}/south.tif", "-m",
                                    str(ckpt), "-o", str(tmp_path / "classes.tif")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "classes_north.tif").is_file() and (tmp_path / "classes_south.tif").is_file()
    with rasterio.open(tmp_path / "classes_south.tif") as out, rasterio.open(root / "south.tif") as src:
        assert (out.shape, out.transform) == (src.shape, src.transform)


# -- limits: what a STAC item may point at, and servers that stall ----------------------------------

def _item(href: str) -> dict:
    return {"type": "Feature", "stac_version": "1.0.0", "id": "scene", **ITEM_FIELDS,
            "assets": {"visual": {"href": href, "type": "image/tiff; application=geotiff"}}}


def test_stac_assets_must_be_relative_or_remote_unless_local_ones_are_allowed(served, tmp_path):
    server, root = served
    local = write_raster(tmp_path / "local.tif", np.full((3, 20, 30), 9, np.uint8))
    hrefs = {"file_url": local.as_uri(), "absolute_path": str(local), "vsizip": f"/vsizip/{tmp_path}/a.zip/local.tif",
             "ftp": "ftp://example.org/local.tif"}
    for name, href in hrefs.items():
        (root / f"{name}.json").write_text(json.dumps(_item(href)))
        (tmp_path / f"{name}.json").write_text(json.dumps(_item(href)))
        for item in (f"{server.url}/{name}.json", tmp_path / f"{name}.json"):  # a remote item and a local one
            with pytest.raises(InputRasterError, match=r"not an http\(s\), s3 or gs URL; .*--allow-local-assets"):
                open_raster(item)
    for name in ("file_url", "absolute_path"):
        with open_raster(f"{server.url}/{name}.json", allow_local_assets=True) as src:
            assert src.shape == (20, 30) and src.name == str(local)
    cog(root / "scene.tif", np.full((3, 20, 30), 5, np.uint8))  # relative and remote hrefs need no flag
    for name, href in (("relative", "scene.tif"), ("absolute_url", f"{server.url}/scene.tif")):
        (root / f"{name}.json").write_text(json.dumps(_item(href)))
        with open_raster(f"{server.url}/{name}.json") as src:
            assert src.shape == (20, 30)


class DripServer:
    """A stalled server: answers with headers at once, then sends one byte every ``every`` seconds
    (for at most ``seconds``). With ``data``, range requests below byte ``fast`` (the header of
    a COG) are answered at once and only the pixel blocks beyond it drip."""

    def __init__(self, data: bytes = b"{" * 100_000, fast: int = 0, every: float = 0.2, seconds: float = 8.0) -> None:
        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()

            def do_GET(self):
                match = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
                start, end = (int(match.group(1)), int(match.group(2))) if match else (0, len(data) - 1)
                body = data[start:end + 1]
                self.send_response(206 if match else 200)
                if match:
                    self.send_header("Content-Range", f"bytes {start}-{start + len(body) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if start + len(body) <= fast:
                    self.wfile.write(body)
                    return
                deadline = time.monotonic() + seconds
                try:
                    for i in range(len(body)):
                        if time.monotonic() > deadline:
                            return
                        self.wfile.write(body[i:i + 1])
                        self.wfile.flush()
                        time.sleep(every)
                except OSError:  # the client gave up: that is the point
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> DripServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


LIMITS = {"GDAL_HTTP_CONNECTTIMEOUT": "2", "GDAL_HTTP_TIMEOUT": "2", "GDAL_HTTP_LOW_SPEED_TIME": "1",
          "GDAL_HTTP_LOW_SPEED_LIMIT": "1000", "GDAL_HTTP_MAX_RETRY": "0"}


def test_a_stalled_server_is_one_line_within_the_time_limits(monkeypatch):
    import rsseg.io
    import rsseg.stac

    monkeypatch.setattr(rsseg.io, "HTTP_LIMITS", LIMITS)
    monkeypatch.setattr(rsseg.stac, "FETCH_TIMEOUT_S", 0.6)
    with DripServer() as server:
        started = time.monotonic()
        with pytest.raises(InputRasterError, match=r"cannot read input raster .*slow\.tif: the server did not answer in time"):
            open_raster(f"{server.url}/slow.tif")
        assert time.monotonic() - started < 6
        started = time.monotonic()
        with pytest.raises(InputRasterError, match=r"STAC item .*item\.json: it did not arrive within 0\.6 s"):
            open_raster(f"{server.url}/item.json")
        assert time.monotonic() - started < 3


def test_the_limits_hold_for_reads_after_the_open(tmp_path, monkeypatch):
    """The header arrives at once, then the server stalls on the pixel blocks: the limits set
    where the raster was opened still end the read, and predict says the server stopped answering."""
    import rsseg.io

    monkeypatch.setattr(rsseg.io, "HTTP_LIMITS", LIMITS)
    data = cog(tmp_path / "c.tif", np.random.default_rng(4).integers(0, 255, (3, 1024, 1024), dtype=np.uint8)).read_bytes()
    with DripServer(data, fast=65536) as server, open_raster(f"{server.url}/c.tif") as src:
        started = time.monotonic()
        with pytest.raises(rasterio.errors.RasterioIOError):
            src.read(window=Window(512, 512, 256, 256))
        assert time.monotonic() - started < 6
    p = Predictor.from_model(nn.Conv2d(3, 2, 3, padding=1).eval(), _meta(), tile=64, overlap=16, batch=2, device="cpu")
    with DripServer(data, fast=65536) as server:
        started = time.monotonic()
        with pytest.raises(InputRasterError, match=r"c\.tif at rows .*the server stopped answering"):
            predict_file(p, f"{server.url}/c.tif", tmp_path / "out.tif")
        assert time.monotonic() - started < 30
    assert not (tmp_path / "out.tif").exists()


def test_a_stac_item_url_may_redirect_to_http_only(tmp_path):
    local = write_raster(tmp_path / "local.tif", np.full((3, 20, 30), 9, np.uint8))

    class Redirect(SimpleHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", local.as_uri() if "file" in self.path else "ftp://127.0.0.1/item.json")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        for name in ("file.json", "ftp.json"):
            with pytest.raises(InputRasterError, match=rf"cannot read STAC item {url}/{name}: .*(not allowed|not an http)"):
                open_raster(f"{url}/{name}")
    finally:
        httpd.shutdown()
        httpd.server_close()


# -- STAC items with one asset per band (Sentinel-2, Landsat) ---------------------------------------

EO = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
#: Earth Search's layout: one single-band COG per band, keyed by common name, eo:bands naming it
S2_BANDS = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08"}


def s2_item(folder: Path, rng: np.random.Generator, dtype=np.uint8, size=(40, 48)) -> tuple[Path, dict]:
    """A Sentinel-2-like item in ``folder``: 2 m bands blue/green/red/nir (relative hrefs), a 4 m
    ``swir16`` band and a 3-band ``visual`` whose eo:bands are red, green, blue too. The pixels of
    each band by common name."""
    height, width = size
    pixels = {name: rng.integers(1, 250, (height, width)).astype(dtype) for name in S2_BANDS}
    assets = {}
    for name, band in S2_BANDS.items():
        cog(folder / f"{band}.tif", pixels[name], nodata=0)
        assets[name] = {"href": f"./{band}.tif", "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                        "roles": ["data"], "eo:bands": [{"name": band, "common_name": name}]}
    cog(folder / "B11.tif", rng.integers(1, 250, (height // 2, width // 2)).astype(dtype),
        transform=rasterio.Affine(4.0, 0, 500000, 0, -4.0, 100000))
    assets["swir16"] = {"href": "B11.tif", "type": "image/tiff; application=geotiff", "roles": ["data"],
                        "eo:bands": [{"name": "B11", "common_name": "swir16"}]}
    cog(folder / "TCI.tif", np.stack([pixels["red"], pixels["green"], pixels["blue"]]))
    assets["visual"] = {"href": "TCI.tif", "type": "image/tiff; application=geotiff", "roles": ["visual"],
                        "eo:bands": [{"name": n, "common_name": n} for n in ("red", "green", "blue")]}
    assets["thumbnail"] = {"href": "thumb.jpg", "type": "image/jpeg"}
    item = {"type": "Feature", "stac_version": "1.0.0", "stac_extensions": [EO], "id": "S2B_T33_20240501",
            **ITEM_FIELDS, "assets": assets}
    (folder / "item.json").write_text(json.dumps(item))
    return folder / "item.json", pixels


def test_per_band_assets_stack_by_key_common_name_or_band_name(tmp_path):
    path, pixels = s2_item(tmp_path, np.random.default_rng(5), np.uint16)
    rgb = np.stack([pixels["red"], pixels["green"], pixels["blue"]])
    for selection in ("red,green,blue", "B04,B03,B02", " red , B03,blue"):
        with open_raster(path, asset=selection) as src:
            assert src.count == 3 and src.descriptions == ("red", "green", "blue"), selection
            assert src.dtypes == ("uint16",) * 3 and src.nodatavals == (0.0,) * 3
            assert np.array_equal(src.read(), rgb), selection
            assert src.transform == rasterio.Affine(2.0, 0, 500000, 0, -2.0, 100000) and src.crs == "EPSG:32633"
            window = src.read(window=Window(10, 5, 8, 6))  # windowed reads, as predict makes them
            assert np.array_equal(window, rgb[:, 5:11, 10:18])
    with open_raster(path, asset="nir,red") as src:  # any order, any bands
        assert src.descriptions == ("nir", "red") and np.array_equal(src.read(1), pixels["nir"])
    with open_raster(path, asset="visual,nir") as src:  # a whole multi-band asset and a band
        assert src.count == 4 and src.descriptions == ("red", "green", "blue", "nir")
    with open_raster(path) as src:  # no selection: 'visual', read as it is
        assert src.count == 3 and src.name.endswith("TCI.tif")
    with pytest.raises(InputRasterError, match=r"has no asset 'B99'; its assets: blue \(image/tiff.*, blue\)"):
        open_raster(path, asset="red,B99")
    with pytest.raises(ConfigError, match=r"--asset 'red,,blue' names an empty asset"):
        open_raster(path, asset="red,,blue")


def test_assets_on_other_grids_are_refused_naming_them_and_their_pixel_sizes(tmp_path):
    path, _ = s2_item(tmp_path, np.random.default_rng(6))
    with pytest.raises(InputRasterError, match=r"not on one grid \(red, green: 2 m pixels, 48x40; swir16: 4 m pixels, "
                                               r"24x20\); choose assets of one resolution"):
        open_raster(path, asset="red,green,swir16")


def test_a_common_name_of_several_assets_prefers_the_single_band_cog(tmp_path):
    """Planetary Computer's layout: bands keyed B04..., ``visual`` declaring red, green, blue too,
    and (Earth Search) a JP2 copy of each band: ``red`` reads the single-band COG."""
    path, pixels = s2_item(tmp_path, np.random.default_rng(7))
    item = json.loads(path.read_text())
    item["assets"] = {S2_BANDS[k]: v for k, v in item["assets"].items() if k in S2_BANDS} | {
        "visual": item["assets"]["visual"],
        "B04-jp2": {"href": "B04.jp2", "type": "image/jp2", "eo:bands": [{"name": "B04", "common_name": "red"}]}}
    path.write_text(json.dumps(item))
    with open_raster(path, asset="red,green,blue") as src:
        assert np.array_equal(src.read(1), pixels["red"]) and src.descriptions == ("red", "green", "blue")
    item["assets"]["B04-copy"] = dict(item["assets"]["B04"])
    path.write_text(json.dumps(item))
    with pytest.raises(InputRasterError, match=r"band 'red' is in several assets \(B04, B04-copy\); name the assets"):
        open_raster(path, asset="red,green,blue")


def test_an_invalid_item_is_one_line(tmp_path):
    item = {"type": "Feature", "stac_version": "1.0.0", "id": "x", "assets": {"visual": {"href": "a.tif"}}}
    for properties, says in (({}, r"Invalid Item: If datetime is None"), (None, r"missing 'properties'")):
        (tmp_path / "item.json").write_text(json.dumps(item | ({"properties": properties} if properties is not None else {})))
        with pytest.raises(InputRasterError, match=rf"item\.json is not a valid STAC item \({says}.*\); an item needs"):
            open_raster(tmp_path / "item.json")


def test_predict_on_per_band_assets_equals_the_stacked_file_and_checks_band_names(served, tmp_path):
    server, root = served
    path, pixels = s2_item(root, np.random.default_rng(8), size=(90, 110))
    rgb = write_raster(tmp_path / "rgb.tif", np.stack([pixels["red"], pixels["green"], pixels["blue"]]), nodata=0)
    torch.manual_seed(0)
    p = Predictor.from_model(nn.Conv2d(3, 2, 3, padding=1).eval(), _meta(), tile=64, overlap=16, batch=2, device="cpu")
    local = predict_file(p, rgb, tmp_path / "local.tif")
    with rasterio.open(local.output_path) as ref:
        expected, grid = ref.read(1), ref.transform
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputFitWarning)  # eo:bands common names match the model's bands
        for item in (path, f"{server.url}/item.json"):  # a local item, and one served with relative hrefs
            out = predict_file(p, item, tmp_path / "stac.tif", asset="B04,B03,B02", overwrite=True)
            with rasterio.open(out.output_path) as res:
                assert np.array_equal(res.read(1), expected) and res.transform == grid
    with pytest.warns(InputFitWarning, match=r"described as blue, green, red but the model reads them as red, green, blue"):
        predict_file(p, path, tmp_path / "bgr.tif", asset="blue,green,red")


def test_cli_predicts_on_per_band_assets(tmp_path):
    path, _ = s2_item(tmp_path, np.random.default_rng(9))
    model = build_model(ModelConfig(), num_classes=2, in_channels=3).eval()
    meta = _meta()
    meta.config = Config().to_dict()
    ckpt = save_model(tmp_path / "m.ckpt", model, meta)
    res = CliRunner().invoke(main, ["predict", str(path), "--asset", "red,green,blue", "-m", str(ckpt), "--engine", "torch",
                                    "-o", str(tmp_path / "classes.tif")])
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "classes.tif") as out:
        assert out.shape == (40, 48)
    res = CliRunner().invoke(main, ["predict", str(path), "--asset", "red,swir16", "-m", str(ckpt),
                                    "-o", str(tmp_path / "bad.tif")])
    assert res.exit_code == 2 and "not on one grid" in res.output and not (tmp_path / "bad.tif").exists()


# -- a remote raster travels once; a server without range requests ---------------------------------

def test_predict_transfers_a_small_remote_cog_once(served, tmp_path):
    server, root = served
    data = np.random.default_rng(10).integers(0, 255, (3, 640, 640), dtype=np.uint8)  # noise: ~1.2 MB
    size = cog(root / "small.tif", data).stat().st_size
    model = build_model(ModelConfig(), num_classes=2, in_channels=3).eval()
    meta = _meta()
    meta.config = Config().to_dict()
    ckpt = save_model(tmp_path / "m.ckpt", model, meta)
    res = CliRunner().invoke(main, ["predict", f"{server.url}/small.tif", "-m", str(ckpt), "-o",
                                    str(tmp_path / "classes.tif"), "--engine", "torch"])
    assert res.exit_code == 0, res.output
    sent = server.sent["small.tif"]
    print(f"served {sent} bytes for a {size}-byte file in {len(server.requests)} requests")
    assert sent <= 1.1 * size, (sent, size)


@pytest.fixture
def no_ranges(tmp_path) -> Iterator[tuple[RangeServer, Path]]:
    root = tmp_path / "plain"
    root.mkdir()
    with RangeServer(root, ranges=False) as server:
        yield server, root


def test_a_server_without_range_requests_is_downloaded_once_with_a_warning(no_ranges, tmp_path):
    """GDAL reads a small file from such a server (the whole file arrives with its first request)
    but refuses a larger one: that one is downloaded, once, by the request that finds out."""
    server, root = no_ranges
    data = np.random.default_rng(11).integers(0, 255, (3, 640, 640), dtype=np.uint8)  # noise: ~1.5 MB
    cog(root / "plain.tif", data)
    url = f"{server.url}/plain.tif"
    with pytest.warns(FallbackWarning, match=r"the server of http://.*plain\.tif does not answer HTTP range requests: "
                                             r"downloading the whole file \(1\.\d MB\) to a temporary file"):
        src = open_raster(url)
    with src:
        assert np.array_equal(src.read(), data) and src.name.endswith("_plain.tif")
    assert [r for _, r in server.requests].count("bytes=0-0") == 1  # rsseg's one request, after GDAL's try
    seen = len(server.requests)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)  # the copy is reused: no second download, no warning
        with open_raster(url) as again:
            assert np.array_equal(again.read(window=Window(600, 600, 40, 40)), data[:, 600:, 600:])
    assert len(server.requests) == seen
    p = Predictor.from_model(nn.Conv2d(3, 2, 3, padding=1).eval(), _meta(), tile=256, overlap=32, batch=2, device="cpu")
    predict_file(p, url, tmp_path / "out.tif")  # the pipeline opens it three times: still no request
    assert len(server.requests) == seen


def test_a_download_over_the_size_cap_is_refused_and_the_copy_removed_at_exit(no_ranges, tmp_path, monkeypatch):
    import rsseg.io

    server, root = no_ranges
    cog(root / "big.tif", np.random.default_rng(12).integers(0, 255, (3, 640, 640), dtype=np.uint8))
    url = f"{server.url}/big.tif"
    monkeypatch.setattr(rsseg.io, "MAX_DOWNLOAD_BYTES", 50_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)  # refused before the download begins
        with pytest.raises(InputRasterError, match=r"cannot read input raster http://.*big\.tif: 1\.\d MB, larger than "
                                                   r"49 kB; its server does not answer HTTP range requests"):
            open_raster(url)
    assert not list(rsseg.io._download_folder().glob("*big.tif"))  # nothing half-downloaded is left
    # a process that read such a file leaves no copy behind when it exits
    code = ("import warnings; warnings.simplefilter('ignore'); from rsseg.io import open_raster, local_copy; "
            f"open_raster({url!r}).close(); print(local_copy({url!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    copy = Path(out.stdout.strip())
    assert copy.name == "0_big.tif" and not copy.exists() and not copy.parent.exists()


def test_the_limits_hold_for_reads_of_stacked_remote_assets(tmp_path, monkeypatch):
    """The bands of a stacked STAC item are read through a VRT: a server that stalls on their
    pixel blocks still ends the read within the limits in effect where the item was opened."""
    import rsseg.io

    monkeypatch.setattr(rsseg.io, "HTTP_LIMITS", LIMITS)
    data = cog(tmp_path / "c.tif", np.random.default_rng(13).integers(0, 255, (1, 1024, 1024), dtype=np.uint8)).read_bytes()
    with DripServer(data, fast=65536) as server:
        item = {"type": "Feature", "stac_version": "1.0.0", "id": "s", **ITEM_FIELDS, "assets": {
            key: {"href": f"{server.url}/{key}.tif", "type": "image/tiff"} for key in ("red", "green")}}
        (tmp_path / "item.json").write_text(json.dumps(item))
        with open_raster(tmp_path / "item.json", asset="red,green") as src:
            assert src.count == 2
            started = time.monotonic()
            with pytest.raises(rasterio.errors.RasterioIOError):
                src.read(window=Window(512, 512, 256, 256))
            assert time.monotonic() - started < 6
