"""Map viewer features without a browser: full-resolution tiles, the error layer, drawn areas,
point inspection, input-only listings and polygon downloads."""

from __future__ import annotations

import io
import re
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from test_app import COLORS, prediction, viewer_data  # noqa: F401 - shared session fixtures

from rsseg import viewer
from rsseg.errors import RsSegError

pytest.importorskip("rio_tiler")


def _png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)))


def _lonlat(path: Path, row: float, col: float) -> tuple[float, float]:
    with rasterio.open(path) as src:
        x, y = src.xy(row, col)
        return Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True).transform(x, y)


def test_tiles_at_full_zoom_show_native_pixels(prediction: viewer.Prediction) -> None:  # noqa: F811
    import morecantile

    info = viewer.tile_info(prediction.classes_tif)
    (s, w), (n, e) = info.bounds
    assert s < n and w < e and info.max_zoom == info.max_native + 2
    with rasterio.open(prediction.classes_tif) as src:
        ids = src.read(1)
    layer = viewer.class_layer(prediction.classes_tif, COLORS)
    # the tile under pixel (100, 37) at full zoom: each source pixel is a 4x4 block of one palette colour
    lon, lat = _lonlat(prediction.classes_tif, 100.5, 37.5)
    t = morecantile.tms.get("WebMercatorQuad").tile(lon, lat, info.max_zoom)
    rgba = _png(viewer.render_tile(layer, t.z, t.x, t.y))
    assert rgba.shape == (256, 256, 4)
    bounds = morecantile.tms.get("WebMercatorQuad").xy_bounds(t)
    px = int((Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(lon, lat)[0] - bounds.left)
             / (bounds.right - bounds.left) * 256)
    py = int((bounds.top - Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(lon, lat)[1])
             / (bounds.top - bounds.bottom) * 256)
    expected = (255, 0, 0) if ids[100, 37] == 1 else (0, 0, 0)
    assert tuple(rgba[py, px, :3]) == expected and rgba[py, px, 3] == 255
    opaque = rgba[rgba[..., 3] == 255][:, :3]
    assert {tuple(c) for c in np.unique(opaque, axis=0)} <= {(0, 0, 0), (255, 0, 0)}  # nearest: no blends
    # the background class hidden: its pixels are transparent
    hidden = _png(viewer.render_tile(viewer.class_layer(prediction.classes_tif, COLORS, hidden=(0,)), t.z, t.x, t.y))
    assert (hidden[..., 3] == 255).sum() == (np.all(rgba[..., :3] == (255, 0, 0), -1) & (rgba[..., 3] == 255)).sum()
    assert viewer.render_tile(layer, info.max_zoom, 0, 0) is None  # far outside the raster


def test_tiles_are_finer_than_the_capped_overlay(viewer_data: dict[str, Path]) -> None:  # noqa: F811
    # the overlay path reads at most max_px; tiles at full zoom resolve single source pixels
    info = viewer.tile_info(viewer_data["raster"])
    with rasterio.open(viewer_data["raster"]) as src:
        res = src.res[0]
    tile_px_m = 2 * np.pi * 6378137 / 256 / 2 ** info.max_native
    assert tile_px_m <= res * 1.01  # native zoom: a tile pixel is no larger than a source pixel


def test_tile_server_serves_registered_layers_only(viewer_data: dict[str, Path]) -> None:  # noqa: F811
    import morecantile

    server = viewer.TileServer().start()
    try:
        url = server.register(viewer.image_layer(viewer_data["raster"]))
        assert url.startswith("http://127.0.0.1:")
        lon, lat = _lonlat(viewer_data["raster"], 128, 128)
        t = morecantile.tms.get("WebMercatorQuad").tile(lon, lat, viewer.tile_info(viewer_data["raster"]).max_zoom)
        with urllib.request.urlopen(url.format(z=t.z, x=t.x, y=t.y), timeout=10) as r:  # noqa: S310 - localhost
            assert r.headers["Content-Type"] == "image/png" and _png(r.read())[..., 3].max() == 255
        base = url.split("/tiles/")[0]
        for bad in ("/tiles/0123456789abcdef/1/0/0.png", "/../../etc/passwd", "/tiles/" + url.split("/")[4] + "/1/5/0.png"):
            with pytest.raises(urllib.error.HTTPError, match="404"):
                urllib.request.urlopen(base + bad, timeout=10)  # noqa: S310
    finally:
        server.stop()


def test_error_values_and_raster(prediction: viewer.Prediction, viewer_data: dict[str, Path]) -> None:  # noqa: F811
    pred = np.array([[1, 1, 0, 0, 255]])
    ref = np.array([[1, 0, 1, 0, 1]])
    assert viewer.error_values(pred, ref, 1).tolist() == [[0, 1, 2, 0, 255]]
    path = viewer.error_raster(prediction.classes_tif, viewer_data["mask"], 1)
    assert viewer.error_raster(prediction.classes_tif, viewer_data["mask"], 1) == path  # written once
    with rasterio.open(path) as e, rasterio.open(prediction.classes_tif) as p, rasterio.open(viewer_data["mask"]) as r:
        assert (e.transform, e.crs, e.shape) == (p.transform, p.crs, p.shape)
        assert np.array_equal(e.read(1), viewer.error_values(p.read(1), r.read(1), 1, r.nodata))
    assert viewer.is_rsseg_output(path)
    with pytest.raises(RsSegError, match="same grid"):
        viewer.error_raster(prediction.classes_tif, _shifted(viewer_data, path.parent), 1)


def test_error_colours_cannot_be_mistaken_for_a_class() -> None:
    from rsseg.data.datasets import get_dataset
    from rsseg.data.raster import color_distance

    old = ["#ff8c00", "#00bfff"]  # orange and sky blue: orange sat 140 from a red class, sky blue 64 from cyan
    assert viewer.error_colors(COLORS) == ["#000000", "#ff00ff", "#00ffff"]  # magenta and cyan by default
    for palette in (COLORS, list(get_dataset("loveda").colors), list(get_dataset("potsdam").colors)):
        fp, fn = viewer.error_colors(palette)[1:]
        nearest = min(color_distance(e, c) for e in (fp, fn) for c in palette)
        assert nearest > min(color_distance(e, c) for e in old for c in palette), palette
        assert nearest >= 127 and color_distance(fp, fn) >= 127, palette
    assert "#ff00ff" not in viewer.error_colors(["#000000", "#ff00ff", "#00ff00"])  # the palette's own magenta


def _shifted(data: dict[str, Path], where: Path) -> Path:
    out = where / "smaller.tif"
    with rasterio.open(data["mask"]) as src:
        profile = src.profile | {"width": 100, "height": 100}
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read(window=rasterio.windows.Window(0, 0, 100, 100)))
    return out


def test_crop_to_drawn_area(viewer_data: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    # a rectangle over rows 50..150, cols 20..120 (pixel centres), and a triangle inside it
    corners = [_lonlat(viewer_data["raster"], r, c) for r, c in ((50, 20), (50, 120), (150, 120), (150, 20), (50, 20))]
    rect = {"type": "Polygon", "coordinates": [corners]}
    crop = viewer.crop_to_area(viewer_data["raster"], {"type": "Feature", "geometry": rect}, tmp_path)
    assert viewer.crop_to_area(viewer_data["raster"], rect, tmp_path) == crop  # same drawing, same file
    with rasterio.open(crop) as c, rasterio.open(viewer_data["raster"]) as src:
        win = viewer.area_window(viewer_data["raster"], rect)
        assert 100 <= c.width <= 102 and 100 <= c.height <= 102 and (c.width, c.height) == (win.width, win.height)
        assert np.array_equal(c.read(), src.read(window=win)) and c.crs == src.crs
        assert c.transform == src.window_transform(win)
        assert (c.dataset_mask() == 255).all()  # a rectangle masks nothing
    tri = {"type": "Polygon", "coordinates": [[corners[0], corners[1], corners[2], corners[0]]]}
    with rasterio.open(viewer.crop_to_area(viewer_data["raster"], tri, tmp_path)) as c:
        valid = (c.dataset_mask() == 255).mean()
        assert 0.4 < valid < 0.65  # half the box, plus the touched edge
    far = {"type": "Polygon", "coordinates": [[[0, 0], [0.001, 0], [0.001, 0.001], [0, 0]]]}
    with pytest.raises(RsSegError, match="does not overlap"):
        viewer.crop_to_area(viewer_data["raster"], far, tmp_path)
    with pytest.raises(RsSegError, match="rectangle or polygon"):
        viewer.crop_to_area(viewer_data["raster"], {"type": "Point", "coordinates": corners[0]}, tmp_path)


def test_prediction_on_drawn_area_runs_the_window_only(viewer_data: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    corners = [_lonlat(viewer_data["raster"], r, c) for r, c in ((0, 0), (0, 127), (127, 127), (127, 0), (0, 0))]
    crop = viewer.crop_to_area(viewer_data["raster"], {"type": "Polygon", "coordinates": [corners]}, tmp_path / "areas")
    seen: list[str] = []
    pred = viewer.run_prediction(crop, viewer_data["ckpt"], tmp_path / "cache", tile=128, overlap=0,
                                 on_progress=lambda f, msg: seen.append(msg))
    assert "predicted 1/1 windows" in seen  # the full 256 px raster would be 4 windows of 128
    with rasterio.open(pred.classes_tif) as p:
        assert p.shape == (128, 128)
    assert sum(r["pixels"] for r in viewer.area_table(pred.report)) == 128 * 128


def test_inspect_point(prediction: viewer.Prediction, viewer_data: dict[str, Path]) -> None:  # noqa: F811
    with rasterio.open(prediction.classes_tif) as c, rasterio.open(prediction.confidence_tif) as p, \
            rasterio.open(viewer_data["mask"]) as r:
        cls, conf, ref = int(c.read(1)[60, 70]), int(p.read(1)[60, 70]), int(r.read(1)[60, 70])
    lon, lat = _lonlat(prediction.classes_tif, 60.5, 70.5)
    hit = viewer.inspect_point(prediction, lat, lon, viewer_data["mask"])
    assert (hit.row, hit.col, hit.class_name) == (60, 70, prediction.classes[cls])
    assert hit.probability == pytest.approx(conf / 255) and 0.5 <= hit.probability <= 1.0  # 2 classes: max prob >= 0.5
    assert hit.reference == prediction.classes[ref]
    assert viewer.inspect_point(prediction, 0.0, 0.0) is None


def test_listing_shows_inputs_not_outputs(viewer_data: dict[str, Path], prediction: viewer.Prediction, tmp_path: Path) -> None:  # noqa: F811
    import shutil

    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(viewer_data["raster"], data / "input.tif")
    shutil.copy(viewer_data["mask"], data / "mask.tif")
    shutil.copy(prediction.classes_tif, data / "input_classes.tif")
    assert viewer.list_files(data, viewer.RASTER_SUFFIXES) == ["input.tif", "input_classes.tif", "mask.tif"]
    assert viewer.list_inputs(data) == ["input.tif", "mask.tif"]


def test_downloads_carry_their_styles_and_the_scene_name(prediction: viewer.Prediction, tmp_path: Path) -> None:  # noqa: F811
    import geopandas as gpd
    import pyogrio
    from test_outputs import _gdalinfo, qgis_default_style

    gpkg = gpd.read_file(prediction.polygons)
    gj = viewer.polygons_file(prediction, "GeoJSON", "small")
    back = gpd.read_file(gj)
    assert gj.name == "small_polygons.geojson" and back.crs.to_epsg() == 4326 and len(back) == len(gpkg)  # RFC 7946
    # the GeoPackage: its layer named after the scene, its style where QGIS looks it up
    styled = viewer.polygons_file(prediction, "GeoPackage", "small")
    assert styled.name == "small_polygons.gpkg" and pyogrio.list_layers(styled)[0, 0] == "small_polygons"
    vqml = qgis_default_style(styled, "small_polygons")
    assert vqml is not None and [c.get("value") for c in vqml.iter("category")] == prediction.classes
    assert len(gpd.read_file(styled, layer="small_polygons")) == len(gpkg)
    # the zipped shapefile with its .qml, all named after the scene
    z = viewer.polygons_file(prediction, "Shapefile (zip)", "small")
    with zipfile.ZipFile(z) as zf:
        names = set(zf.namelist())
        assert "categorizedSymbol" in zf.read("small_polygons.qml").decode()
    assert {"small_polygons.shp", "small_polygons.shx", "small_polygons.dbf", "small_polygons.prj",
            "small_polygons.qml"} <= names
    assert len(gpd.read_file(f"zip://{z}!small_polygons.shp")) == len(gpkg)
    # the class raster zipped with its category names and QGIS style, which GDAL reads beside it
    c = viewer.class_raster_file(prediction, "small")
    with zipfile.ZipFile(c) as zf:
        assert sorted(zf.namelist()) == ["small_classes.qml", "small_classes.tif", "small_classes.tif.aux.xml"]
        zf.extractall(tmp_path)
    assert (tmp_path / "small_classes.tif").read_bytes() == prediction.classes_tif.read_bytes()
    assert "paletted" in (tmp_path / "small_classes.qml").read_text()
    assert _gdalinfo(tmp_path / "small_classes.tif")["bands"][0]["categories"] == prediction.classes


def test_map_with_tiles_swipe_and_draw(prediction: viewer.Prediction, viewer_data: dict[str, Path]) -> None:  # noqa: F811
    server = viewer.TileServer().start()
    try:
        image = viewer.raster_layer("input image", viewer_data["raster"], server=server)
        classes = viewer.raster_layer("classes", prediction.classes_tif, colors=COLORS, hidden=(0,), server=server, side="right")
        assert image.tiles and classes.tiles and image.overlay is None
        page = viewer.build_map(layers=[image, classes], swipe=True, draw=True).get_root().render()
        assert classes.tiles.replace("{", "").split("z")[0] in page.replace("{", "")
        assert '"pane": "rsseg-right"' in page and "rssegSwipe(" in page and "maxZoom" in page
        flat = viewer.raster_layer("classes", prediction.classes_tif, colors=COLORS, server=None)
        assert flat.overlay is not None and flat.tiles is None  # no server: the capped overlay
    finally:
        server.stop()


# -- a tile server that cannot be tied up -----------------------------------------------------------

def _big_raster(path: Path, size: int = 4096, overviews: tuple[int, ...] = ()) -> Path:
    """A tiled, compressed single-band raster (a gradient: a few kB), with internal ``overviews``."""
    from conftest import UTM_TRANSFORM

    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1, dtype="uint8", tiled=True,
                       blockxsize=256, blockysize=256, compress="deflate", crs="EPSG:32633",
                       transform=UTM_TRANSFORM) as dst:
        row = (np.arange(size) % 251).astype(np.uint8)
        dst.write(np.tile(row, (size, 1))[None])
        if overviews:
            dst.build_overviews(list(overviews), rasterio.enums.Resampling.nearest)
    return path


def _centre_tile(path: Path, z: int) -> tuple[int, int, int]:
    import morecantile

    with rasterio.open(path) as src:
        lon, lat = _lonlat(path, src.height / 2, src.width / 2)
    t = morecantile.tms.get("WebMercatorQuad").tile(lon, lat, z)
    return t.z, t.x, t.y


def test_min_zoom_follows_the_overviews(tmp_path: Path) -> None:
    from rsseg.errors import TileRequestError
    from rsseg.viewer import tile_server

    bare = _big_raster(tmp_path / "bare.tif")
    pyramid = _big_raster(tmp_path / "pyramid.tif", overviews=(2, 4, 8, 16))
    b, p = viewer.tile_info(bare), viewer.tile_info(pyramid)
    assert b.max_native == p.max_native
    # no overviews: 2 levels out a tile reads 1024 x 1024 pixels, 3 levels out 2048 x 2048 (refused)
    assert b.min_zoom == b.max_native - 2
    # overviews down to 256 px: 2 levels below the zoom where the whole raster is one tile (4096 = 256 x 2**4)
    assert p.min_zoom == p.max_native - 4 - tile_server.ZOOM_OUT
    layer = viewer.image_layer(bare)
    assert viewer.render_tile(layer, *_centre_tile(bare, b.min_zoom)) is not None
    with pytest.raises(TileRequestError, match="below the lowest zoom") as refused:
        viewer.render_tile(layer, *_centre_tile(bare, b.min_zoom - 1))
    assert refused.value.status == 404
    assert viewer.render_tile(viewer.image_layer(pyramid), *_centre_tile(pyramid, p.min_zoom)) is not None
    # the map cannot zoom out past the tile layers' lowest zoom
    server = viewer.TileServer(roots=(tmp_path,)).start()
    try:
        layers = [viewer.raster_layer(name, path, server=server) for name, path in (("bare", bare), ("pyramid", pyramid))]
        assert [layer.min_zoom for layer in layers] == [b.min_zoom, p.min_zoom]
        page = viewer.build_map(layers=layers).get_root().render()
        assert f'"minZoom": {b.min_zoom}' in page  # each tile layer stops at its own lowest zoom
        # and the map itself at the lowest of them
        assert re.search(rf'L\.map\(\s*"[^"]+",\s*\{{[^}}]*"minZoom": {p.min_zoom},', page), page[:3000]
    finally:
        server.stop()


def test_a_sparse_raster_without_overviews_cannot_tie_the_server_up(tmp_path: Path) -> None:
    """A few-kB sparse GeoTIFF of 21504 x 21504 pixels (just under the viewer's pixel limit), no
    overviews: the map stops two levels below its native zoom, where a tile reads 1024 x 1024
    pixels, and a tile further out is refused at once."""
    import time

    from conftest import UTM_TRANSFORM

    sparse = tmp_path / "sparse.tif"
    with rasterio.open(sparse, "w", driver="GTiff", width=21504, height=21504, count=3, dtype="uint8", tiled=True,
                       blockxsize=512, blockysize=512, sparse_ok=True, compress="deflate", crs="EPSG:32633",
                       transform=UTM_TRANSFORM):
        pass
    assert sparse.stat().st_size < 100_000
    info = viewer.tile_info(sparse)
    assert info.min_zoom == info.max_native - 2
    server = viewer.TileServer().start()
    try:
        url = server.register(viewer.image_layer(sparse))
        for z, code in ((info.min_zoom, 200), (info.min_zoom - 3, 404)):
            z, x, y = _centre_tile(sparse, z)
            started = time.monotonic()
            try:
                with urllib.request.urlopen(url.format(z=z, x=x, y=y), timeout=30) as r:  # noqa: S310 - localhost
                    got, reason = r.status, ""
            except urllib.error.HTTPError as exc:
                got, reason = exc.code, exc.reason
            assert got == code, reason
            assert code == 200 or "below the lowest zoom" in reason
            assert time.monotonic() - started < 5, (z, time.monotonic() - started)  # was 16-23 s a tile
    finally:
        server.stop()


def test_a_slow_tile_is_a_503_and_the_queue_is_bounded(viewer_data: dict[str, Path], monkeypatch) -> None:  # noqa: F811
    import threading
    import time

    from rsseg.viewer import tile_server

    gate = threading.Event()
    started: list[int] = []

    def slow(layer, z, x, y, *, root=None) -> bytes:  # noqa: ANN001 - render_tile's signature
        started.append(z)
        gate.wait(10)
        return b"tile"

    monkeypatch.setattr(tile_server, "render_tile", slow)
    server = viewer.TileServer(workers=1, queue=0, tile_timeout=0.3).start()
    try:
        url = server.register(viewer.image_layer(viewer_data["raster"]))
        t0 = time.monotonic()
        with pytest.raises(urllib.error.HTTPError) as late:
            urllib.request.urlopen(url.format(z=1, x=0, y=0), timeout=10)  # noqa: S310 - localhost
        assert late.value.code == 503 and "longer than 0.3 s" in late.value.reason
        assert time.monotonic() - t0 < 3
        # the one worker still renders that tile: the next request is turned away at once, not queued
        t0 = time.monotonic()
        with pytest.raises(urllib.error.HTTPError) as busy:
            urllib.request.urlopen(url.format(z=2, x=0, y=0), timeout=10)  # noqa: S310
        assert busy.value.code == 503 and "busy" in busy.value.reason and time.monotonic() - t0 < 0.3
        assert started == [1]
        gate.set()
        deadline = time.monotonic() + 5
        while True:  # the worker frees its slot once the slow render returns
            try:
                with urllib.request.urlopen(url.format(z=3, x=0, y=0), timeout=10) as r:  # noqa: S310
                    assert r.read() == b"tile"
                break
            except urllib.error.HTTPError as exc:
                assert exc.code == 503 and time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        gate.set()
        server.stop()


def test_a_file_swapped_for_a_symlink_after_registration_is_not_served(viewer_data: dict[str, Path],  # noqa: F811
                                                                       tmp_path: Path) -> None:
    import shutil

    from rsseg.errors import InputNotFoundError, TileRequestError

    data, outside = tmp_path / "data", tmp_path / "outside"
    data.mkdir()
    outside.mkdir()
    shutil.copy(viewer_data["raster"], data / "scene.tif")
    shutil.copy(viewer_data["raster"], outside / "secret.tif")
    server = viewer.TileServer(roots=(data,)).start()
    try:
        layer = viewer.image_layer(data / "scene.tif")
        url = server.register(layer)
        with pytest.raises(InputNotFoundError, match="outside the viewer's directories"):
            server.register(viewer.image_layer(outside / "secret.tif"))
        z, x, y = _centre_tile(data / "scene.tif", viewer.tile_info(data / "scene.tif").max_native)
        with urllib.request.urlopen(url.format(z=z, x=x, y=y), timeout=10) as r:  # noqa: S310 - localhost
            assert r.status == 200
        (data / "scene.tif").unlink()
        (data / "scene.tif").symlink_to(outside / "secret.tif")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url.format(z=z, x=x, y=y), timeout=10)  # noqa: S310
        assert refused.value.code == 403 and "outside the data directory" in refused.value.reason
        with pytest.raises(TileRequestError, match="outside the data directory"):
            viewer.render_tile(layer, z, x, y, root=data)
    finally:
        server.stop()


def test_the_viewer_says_when_it_runs_without_tiles(monkeypatch) -> None:
    import rsseg.viewer.tile_server as tile_server

    assert viewer.tiles_off_reason({}) is None  # rio-tiler here, tiles on
    assert "served to the network" in viewer.tiles_off_reason({"RSSEG_TILES": "0"})
    monkeypatch.setattr(tile_server, "tiles_available", lambda: False)
    reason = viewer.tiles_off_reason({})
    assert f"at most {viewer.MAX_DISPLAY_PX} px" in reason and "pip install 'rsseg[viewer]'" in reason
