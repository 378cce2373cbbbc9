"""Map viewer: path confinement, uploads, rendering, and the Streamlit app driven with AppTest."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from conftest import uint8_contract
from rasterio.windows import Window

from rsseg import viewer
from rsseg.errors import RsSegError

CLASSES = ["background", "building"]
COLORS = ["#000000", "#ff0000"]


def _crop(src_path: Path, dst_path: Path, size: int = 256) -> None:
    with rasterio.open(src_path) as src:
        win = Window((src.width - size) // 2, (src.height - size) // 2, size, size)
        profile = src.profile | {"width": size, "height": size, "transform": src.window_transform(win)}
        with rasterio.open(dst_path, "w", **profile) as dst:
            dst.write(src.read(window=win))


@pytest.fixture(scope="session")
def viewer_data(tmp_path_factory: pytest.TempPathFactory, sample_tiles: Path) -> dict[str, Path]:
    """A data dir with a tiny checkpoint, a 256x256 crop of the Tanzania image and its mask, plus
    a file outside it and a symlink pointing there (to test confinement)."""
    from rsseg.checkpoint import ModelMeta, save_model
    from rsseg.config import Config
    from rsseg.models import build_model

    root = tmp_path_factory.mktemp("viewer")
    data, outside = root / "data", root / "outside"
    (data / ".hidden").mkdir(parents=True)
    outside.mkdir()
    _crop(sample_tiles / "tanzania" / "image.tif", data / "small.tif")
    _crop(sample_tiles / "tanzania" / "mask.tif", data / "small_mask.tif")
    _crop(sample_tiles / "tanzania" / "mask.tif", outside / "secret.tif")
    _crop(sample_tiles / "tanzania" / "mask.tif", data / ".hidden" / "skip.tif")
    (data / "link.tif").symlink_to(outside / "secret.tif")
    cfg = Config()
    cfg.model.encoder, cfg.model.decode_channels, cfg.model.embed_dim, cfg.model.num_heads = "mobilenetv3_small_050", 32, 16, 4
    model = build_model(cfg.model, num_classes=2, in_channels=3)
    meta = ModelMeta(classes=CLASSES, colors=COLORS, bands=["red", "green", "blue"], mean=[0.5] * 3, std=[0.25] * 3,
                     config=cfg.to_dict(), **uint8_contract())
    (data / "models").mkdir()
    save_model(data / "models" / "m.ckpt", model, meta)
    return {"data": data, "outside": outside, "cache": root / "cache", "raster": data / "small.tif",
            "mask": data / "small_mask.tif", "ckpt": data / "models" / "m.ckpt"}


@pytest.fixture(scope="session")
def prediction(viewer_data: dict[str, Path]) -> viewer.Prediction:
    return viewer.run_prediction(viewer_data["raster"], viewer_data["ckpt"], viewer_data["cache"], tile=256, overlap=0)


# -- files: confinement and uploads ---------------------------------------------------------------

def test_listing_stays_inside_data_dir(viewer_data: dict[str, Path]) -> None:
    rasters = viewer.list_files(viewer_data["data"], viewer.RASTER_SUFFIXES)
    assert rasters == ["small.tif", "small_mask.tif"]  # no symlink escape, no hidden folder
    assert viewer.list_files(viewer_data["data"], viewer.CHECKPOINT_SUFFIXES) == ["models/m.ckpt"]


@pytest.mark.parametrize("bad", ["../outside/secret.tif", "link.tif", "models/../../outside/secret.tif", "/etc/passwd"])
def test_resolve_under_rejects_escapes(viewer_data: dict[str, Path], bad: str) -> None:
    with pytest.raises(RsSegError, match="outside the data directory"):
        viewer.resolve_under(viewer_data["data"], bad)


def test_resolve_under_accepts_inside(viewer_data: dict[str, Path]) -> None:
    assert viewer.resolve_under(viewer_data["data"], "models/../small.tif") == viewer_data["raster"].resolve()
    with pytest.raises(RsSegError, match="not a file"):
        viewer.resolve_under(viewer_data["data"], "models")


def test_symlinked_data_directories(viewer_data: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    # the data directory itself a symlink: resolved once, listed as the folder it points to
    link = tmp_path / "data-link"
    link.symlink_to(viewer_data["data"], target_is_directory=True)
    assert viewer.list_files(link, viewer.RASTER_SUFFIXES) == ["small.tif", "small_mask.tif"]
    assert viewer.AppSettings.from_env({"RSSEG_DATA_DIR": str(link)}).data_dir == viewer_data["data"].resolve()
    assert viewer.links_outside(link) == ["link.tif"]  # named, not listed
    # symlinked folders inside it are followed while they stay inside; a loop is walked once
    root = tmp_path / "root"
    (root / "scenes").mkdir(parents=True)
    shutil.copy(viewer_data["raster"], root / "scenes" / "a.tif")
    (root / "latest").symlink_to(root / "scenes", target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "elsewhere").symlink_to(viewer_data["outside"], target_is_directory=True)
    (root / "notes.txt").symlink_to(viewer_data["outside"] / "secret.tif")  # not a raster name: not worth a line
    assert viewer.list_files(root, viewer.RASTER_SUFFIXES) == ["scenes/a.tif"]
    assert viewer.links_outside(root) == ["elsewhere"]
    assert viewer.resolve_under(root, "latest/a.tif") == (root / "scenes" / "a.tif").resolve()
    with pytest.raises(RsSegError, match="outside the data directory"):
        viewer.resolve_under(root, "elsewhere/secret.tif")


def test_rasters_open_as_geotiff_only(tmp_path: Path) -> None:
    # GDAL picks drivers by content: a VRT named .tif could read any file on the server
    evil = tmp_path / "evil.tif"
    evil.write_text('<VRTDataset rasterXSize="1" rasterYSize="1"><VRTRasterBand dataType="Byte" band="1">'
                    '<SimpleSource><SourceFilename>/etc/hostname</SourceFilename></SimpleSource></VRTRasterBand></VRTDataset>')
    with pytest.raises(RsSegError, match="not a readable GeoTIFF"):
        viewer.check_raster(evil)
    with pytest.raises(RsSegError, match="not a readable GeoTIFF"):
        viewer.render_image(evil)


def test_save_upload(viewer_data: dict[str, Path], tmp_path: Path) -> None:
    data = viewer_data["raster"].read_bytes()
    saved = viewer.save_upload(data, "../../etc/my image.tif", tmp_path / "up", max_mb=10)
    assert saved.parent == tmp_path / "up" and saved.name.endswith("-my_image.tif") and saved.read_bytes() == data
    assert viewer.save_upload(data, "other.tif", tmp_path / "up", max_mb=10).read_bytes() == data
    with pytest.raises(RsSegError, match="limit is 0.01 MB"):
        viewer.save_upload(data, "big.tif", tmp_path / "up", max_mb=0.01)
    with pytest.raises(RsSegError, match="not a .tif"):
        viewer.save_upload(data, "x.vrt", tmp_path / "up", max_mb=10)
    with pytest.raises(RsSegError, match="not a readable GeoTIFF"):
        viewer.save_upload(b"not a tiff", "fake.tif", tmp_path / "up", max_mb=10)
    assert sorted(p.name.split("-", 1)[1] for p in (tmp_path / "up").iterdir()) == ["my_image.tif", "other.tif"]


# -- prediction cache, rendering, queries ---------------------------------------------------------

def test_prediction_is_cached_on_disk(viewer_data: dict[str, Path], prediction: viewer.Prediction) -> None:
    calls = []
    again = viewer.run_prediction(viewer_data["raster"], viewer_data["ckpt"], viewer_data["cache"], tile=256, overlap=0,
                                  loader=lambda p: calls.append(p))
    assert again == prediction and calls == []  # found in the cache: the model is never loaded
    assert viewer.find_prediction(viewer_data["raster"], viewer_data["ckpt"], viewer_data["cache"], tile=512, overlap=0) is None
    rows = viewer.area_table(prediction.report)
    assert [r["class"] for r in rows] == CLASSES
    assert sum(r["pixels"] for r in rows) == 256 * 256
    assert sum(r["percent"] for r in rows) == pytest.approx(100, abs=0.05)
    md = viewer.area_markdown(prediction.report)
    assert "| building |" in md and "Total valid area" in md


def test_viewer_predicts_with_the_one_settings_resolution(viewer_data: dict[str, Path], tmp_path: Path) -> None:
    from rsseg.checkpoint import read_meta
    from rsseg.inference import resolve_settings

    s, r = viewer.prediction_settings(viewer_data["ckpt"], tile=128), resolve_settings(read_meta(viewer_data["ckpt"]), tile=128)
    assert (s.tile, s.overlap, s.tta) == (r.tile, r.overlap, r.tta) == (128, 32, "none")  # overlap fitted to the tile
    seen: list[tuple[float, str]] = []
    pred = viewer.run_prediction(viewer_data["raster"], viewer_data["ckpt"], tmp_path / "cache", tile=128,
                                 on_progress=lambda f, msg: seen.append((f, msg)))
    # the overlap left unset resolves the same way when the cache is looked up
    assert viewer.find_prediction(viewer_data["raster"], viewer_data["ckpt"], tmp_path / "cache", tile=128) == pred
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(msg == "predicted 9/9 windows" for _, msg in seen)  # 256 px in 128 px windows with 32 px overlap


def test_render_classes_uses_palette_and_nearest(prediction: viewer.Prediction) -> None:
    from PIL import Image

    ov = viewer.render_classes(prediction.classes_tif, COLORS, max_px=128)
    assert max(ov.width, ov.height) <= 128
    rgba = np.asarray(Image.open(io.BytesIO(ov.data)))
    opaque = rgba[rgba[..., 3] == 255][:, :3]
    assert len(opaque) > 0.9 * ov.width * ov.height
    # nearest-neighbour: every opaque pixel is exactly one palette colour, no blends
    assert {tuple(c) for c in np.unique(opaque, axis=0)} <= {(0, 0, 0), (255, 0, 0)}
    (s, w), (n, e) = ov.bounds
    assert -6.05 < s < n < -6.04 and 39.24 < w < e < 39.25  # Dar es Salaam area, from EPSG:3857


def test_render_image_caps_size(sample_tiles: Path) -> None:
    from PIL import Image

    ov = viewer.render_image(sample_tiles / "tanzania" / "image.tif", max_px=200)
    assert max(ov.width, ov.height) <= 200 and ov.data_url().startswith("data:image/webp;base64,")
    assert Image.open(io.BytesIO(ov.data)).size == (ov.width, ov.height)


def test_render_image_masks_nodata_collar(shared_data: Path) -> None:
    from PIL import Image

    # Landsat scene in UTM with a nodata collar: warped to Web Mercator, the collar is transparent
    ov = viewer.render_image(shared_data / "landsat" / "RGB.byte.tif", max_px=256)
    alpha = np.asarray(Image.open(io.BytesIO(ov.data)))[..., 3]
    assert 0.2 < (alpha == 0).mean() < 0.6 and alpha[ov.height // 2, ov.width // 2] == 255
    (s, w), (n, e) = ov.bounds
    assert 23 < s < n < 26 and -80 < w < e < -76  # the Bahamas


def test_query_point_reads_the_clicked_pixel(prediction: viewer.Prediction) -> None:
    from pyproj import Transformer

    with rasterio.open(prediction.classes_tif) as src:
        ids = src.read(1)
        x, y = src.xy(100, 37)
        lon, lat = Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True).transform(x, y)
    hit = viewer.query_point(prediction.classes_tif, lat, lon)
    assert (hit.row, hit.col, hit.value) == (100, 37, int(ids[100, 37]))
    assert viewer.query_point(prediction.classes_tif, 0.0, 0.0) is None


def test_polygons_geojson_in_wgs84(prediction: viewer.Prediction) -> None:
    gj, total = viewer.polygons_geojson(prediction.polygons, COLORS, max_features=3)
    assert total >= len(gj["features"]) and len(gj["features"]) <= 3
    lon, lat = np.asarray(gj["features"][0]["geometry"]["coordinates"][0]).T
    assert np.all((lon > 39.24) & (lon < 39.25) & (lat > -6.05) & (lat < -6.04))
    assert {f["properties"]["fill"] for f in gj["features"]} <= set(COLORS)


def test_legend_escapes_untrusted_names() -> None:
    group = viewer.LegendGroup("<b>x</b>", ["<script>alert(1)</script>", "road"], ["#00ff00", "red;background:url(x)"],
                               layers=('errors: "><script>',))
    html = viewer.legend_html([group])
    assert 'id="rsseg-legend"' in html and "<script>" not in html and "&lt;script&gt;" in html
    assert "#00ff00" in html and "url(x)" not in html and "<b>x</b>" not in html


def test_legend_lists_the_visible_layers_only() -> None:
    classes = viewer.LegendGroup("Classes", CLASSES, COLORS, layers=("classes", "reference"))
    errors = viewer.LegendGroup("Errors: building", ["false positive", "false negative"], ["#ff00ff", "#00ffff"],
                                layers=("errors: building",))
    html = viewer.legend_html([classes, errors], visible=["input image", "classes"])
    shown, hidden = html.split('data-layers="[&quot;errors: building&quot;]"')
    assert "display:none" not in shown and hidden.startswith(' style="display:none"') and "false positive" in hidden
    # nothing described is on (only the input image): the whole legend starts hidden
    assert 'style="display:none;position:fixed' in viewer.legend_html([classes, errors], visible=["input image"])


def test_map_legend_follows_the_layer_control(prediction: viewer.Prediction) -> None:
    classes = viewer.MapLayer.from_overlay("classes", viewer.render_classes(prediction.classes_tif, COLORS, max_px=64))
    errors = viewer.MapLayer.from_overlay("errors: building", viewer.render_classes(prediction.classes_tif, COLORS, max_px=64),
                                          show=False)
    legend = [viewer.LegendGroup("Classes", CLASSES, COLORS, ("classes",)),
              viewer.LegendGroup("Errors: building", ["false positive"], ["#ff00ff"], ("errors: building",))]
    page = viewer.build_map(layers=[classes, errors], legend=legend).get_root().render()
    assert 'data-layers="[&quot;errors: building&quot;]" style="display:none"' in page  # that layer starts off
    # switching a layer on or off in the layer control shows or hides its legend rows
    assert 'map.on("overlayadd"' in page and 'map.on("overlayremove"' in page and 'new Set(["classes"])' in page


def test_area_chart_paints_each_class_in_its_colour(prediction: viewer.Prediction) -> None:
    spec = viewer.area_chart(prediction.report, COLORS)
    assert spec["encoding"]["color"]["scale"] == {"domain": CLASSES, "range": COLORS}
    assert [row["class"] for row in spec["data"]["values"]] == CLASSES
    assert viewer.area_chart(prediction.report, ["#000000", "red;x"])["encoding"]["color"]["scale"]["range"] == ["#000000", "#808080"]


def test_confusion_matrix_title_and_class_names_fit_in_the_picture() -> None:
    import matplotlib.pyplot as plt

    from rsseg.evaluation import confusion_figure

    for names in (CLASSES, ["impervious surfaces", "building", "low vegetation", "tree", "car", "clutter"]):
        fig = confusion_figure(np.eye(len(names)) * 90 + 5, names)
        fig.canvas.draw()
        frame = fig.bbox
        ax = fig.axes[0]
        for text in (ax.title, ax.xaxis.label, ax.yaxis.label, *ax.get_xticklabels(), *ax.get_yticklabels()):
            box = text.get_window_extent()
            assert box.x0 >= frame.x0 - 0.5 and box.x1 <= frame.x1 + 0.5, (text.get_text(), box, frame)
            assert box.y0 >= frame.y0 - 0.5 and box.y1 <= frame.y1 + 0.5, (text.get_text(), box, frame)
        plt.close(fig)


def test_map_uses_local_leaflet_when_available(prediction: viewer.Prediction, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "leaflet.js").write_text("window.L = {};")
    (tmp_path / "leaflet.css").write_text(".leaflet-control-layers-toggle{background-image:url(images/layers.png)}")
    (tmp_path / "images" / "layers.png").write_bytes(b"\x89PNG fake")
    monkeypatch.setenv("RSSEG_LEAFLET_DIR", str(tmp_path))
    assets = viewer.local_leaflet()
    assert assets is not None and assets.source == str(tmp_path)
    layer = viewer.MapLayer.from_overlay("classes", viewer.render_classes(prediction.classes_tif, COLORS, max_px=64))
    m = viewer.build_map(layers=[layer], legend=[viewer.LegendGroup("Classes", CLASSES, COLORS, ("classes",))], leaflet=assets,
                         draw=True)
    assert [u for _, u in m.default_js] == [assets.js_url] and assets.js_url.startswith("data:text/javascript")
    assert "images/layers.png" not in assets.css_url  # the CSS image is inlined too
    page = m.get_root().render()
    assert "rsseg-legend" in page and "imageOverlay" in page and "tile.openstreetmap" not in page
    # folium's Draw plugin loads Leaflet.draw from cdnjs; the viewer inlines its vendored copy
    assert "cdnjs" not in page and "L.Control.Draw" in page
    draw_css = viewer.leaflet_draw().css_url
    assert draw_css.startswith("data:text/css") and "images/spritesheet" not in base64.b64decode(draw_css.split(",", 1)[1]).decode()
    online = viewer.build_map(layers=[layer], basemap="OpenStreetMap (online)")
    assert "tile.openstreetmap.org" in online.get_root().render()


# -- the Streamlit app ----------------------------------------------------------------------------

@pytest.fixture()
def app(viewer_data: dict[str, Path], monkeypatch: pytest.MonkeyPatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("RSSEG_DATA_DIR", str(viewer_data["data"]))
    monkeypatch.setenv("RSSEG_CACHE_DIR", str(viewer_data["cache"] / "app"))
    monkeypatch.setenv("RSSEG_MAX_UPLOAD_MB", "5")
    at = AppTest.from_file(str(viewer.app_script()), default_timeout=300)
    at.query_params["raster"] = "small.tif"
    at.query_params["model"] = "models/m.ckpt"
    return at


@pytest.fixture()
def media(monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Bytes behind each media URL (download buttons) the app registers during the test."""
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    store: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def spy(self, path_or_data, mimetype, kind, filename=None):  # noqa: ANN001, ANN202
        file_id = original(self, path_or_data, mimetype, kind, filename)
        store[self.get_url(file_id)] = path_or_data if isinstance(path_or_data, bytes) else Path(path_or_data).read_bytes()
        return file_id

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", spy)
    return store


def test_app_predicts_and_offers_downloads(app, media: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    import rsseg.viewer.session as session

    runs = []
    real = session.predict_file
    monkeypatch.setattr(session, "predict_file", lambda *a, **k: runs.append(1) or real(*a, **k))
    app.run()
    assert not app.exception and not app.error
    assert app.selectbox(key="raster").options == ["small.tif", "small_mask.tif"]
    assert app.selectbox(key="raster").value == "small.tif" and app.selectbox(key="model").value == "models/m.ckpt"
    assert app.selectbox(key="basemap").value == "none"
    assert not app.dataframe  # nothing predicted before Run
    app.button(key="run").click().run()
    assert not app.exception and not app.error
    table = app.dataframe[0].value
    assert list(table["class"]) == CLASSES and table["pixels"].sum() == 256 * 256
    chart = json.loads(app.get("vega_lite_chart")[0].proto.spec)  # one colour per class, the map's
    assert chart["encoding"]["color"]["scale"] == {"domain": CLASSES, "range": COLORS}
    buttons = {b.label: b.proto.url for b in app.get("download_button")}
    assert set(buttons) == {"Class raster (GeoTIFF, zip)", "Confidence raster (GeoTIFF)", "Polygons (GeoPackage)", "Polygons (GeoJSON)",
                            "Polygons (Shapefile (zip))", "Area report (JSON)", "Area report (Markdown)"}
    assert media[buttons["Confidence raster (GeoTIFF)"]][:4] in (b"II*\x00", b"MM\x00*")
    assert json.loads(media[buttons["Polygons (GeoJSON)"]])["type"] == "FeatureCollection"
    assert media[buttons["Polygons (Shapefile (zip))"]][:2] == b"PK"
    with zipfile.ZipFile(io.BytesIO(media[buttons["Class raster (GeoTIFF, zip)"]])) as zf:  # named after the scene
        assert sorted(zf.namelist()) == ["small_classes.qml", "small_classes.tif", "small_classes.tif.aux.xml"]
    assert b"layer_styles" in media[buttons["Polygons (GeoPackage)"]]  # its QGIS style inside
    assert media[buttons["Polygons (GeoPackage)"]].startswith(b"SQLite format 3")
    assert json.loads(media[buttons["Area report (JSON)"]])["classes"][1]["class_name"] == "building"
    assert b"| building |" in media[buttons["Area report (Markdown)"]]
    app.slider(key="opacity").set_value(0.3).run()  # re-render: the model must not run again
    assert not app.exception and app.dataframe and len(runs) == 1


def test_app_scores_against_reference(app) -> None:
    app.query_params["reference"] = "small_mask.tif"
    app.query_params["run"] = "1"
    app.run()
    assert not app.exception and not app.error
    md = "\n".join(m.value for m in app.markdown)
    assert "mIoU" in md and "OA" in md
    accuracy = next(d.value for d in app.dataframe if "IoU" in d.value.columns)
    assert list(accuracy["class"]) == CLASSES and list(accuracy.columns) == ["class", "IoU", "F1", "precision", "recall", "pixels"]
    assert accuracy["pixels"].sum() == 256 * 256 and accuracy["IoU"].between(0, 100).all()
    assert len(app.image) == 1  # the confusion-matrix PNG


def test_app_compares_with_reference(app) -> None:
    app.query_params["reference"] = "small_mask.tif"
    app.query_params["run"] = "1"
    app.run()
    assert not app.exception and not app.error
    assert app.selectbox(key="compare").options == ["off", "input | classes", "reference | prediction"]
    assert app.selectbox(key="error_class").value == "building"  # the first class after the background
    assert app.checkbox(key="show_background").value is False
    app.selectbox(key="compare").set_value("reference | prediction").run()
    app.checkbox(key="show_background").check().run()
    assert not app.exception and not app.error


def test_app_predicts_inside_drawn_area(app, viewer_data: dict[str, Path]) -> None:
    from pyproj import Transformer

    app.run()
    assert app.radio(key="area").disabled  # nothing drawn yet
    with rasterio.open(viewer_data["raster"]) as src:
        to_ll = Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True)
        ring = [to_ll.transform(*src.xy(r, c)) for r, c in ((10, 10), (10, 73), (73, 73), (73, 10), (10, 10))]
    app.session_state["aoi"] = {"type": "Polygon", "coordinates": [ring]}  # what st_folium returns after a drawing
    app.run()
    app.radio(key="area").set_value("Drawn area").run()
    app.button(key="run").click().run()
    assert not app.exception and not app.error
    pixels = app.dataframe[0].value["pixels"].sum()
    assert 64 * 64 <= pixels <= 66 * 66  # the drawn window only, not the 256 x 256 raster
    app.button(key="clear_area").click().run()
    assert not app.exception and "aoi" not in app.session_state and app.radio(key="area").disabled


def test_app_upload_respects_limit(app, viewer_data: dict[str, Path]) -> None:
    app.run()
    app.radio(key="source").set_value("Upload").run()
    app.file_uploader(key="upload").set_value(("mine.tif", viewer_data["raster"].read_bytes(), "image/tiff")).run()
    assert not app.exception and not app.error
    assert app.button(key="run").disabled is False
    app.file_uploader(key="upload").set_value(("big.tif", b"\0" * (6 * 2**20), "image/tiff")).run()
    assert any("limit is 5 MB" in e.value for e in app.error)


def test_cli_app_binds_localhost(viewer_data: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from rsseg.cli.main import main

    seen = {}

    def fake_exec(path: str, cmd: list[str], env: dict[str, str]) -> None:
        seen.update(cmd=cmd, env=env)
        raise SystemExit(0)

    monkeypatch.setattr(os, "execve", fake_exec)
    result = CliRunner().invoke(main, ["app", "--data-dir", str(viewer_data["data"]), "--max-upload-mb", "50", "--headless"])
    assert result.exit_code == 0, result.output
    cmd = seen["cmd"]
    assert cmd[cmd.index("run") + 1] == str(viewer.app_script()) and Path(cmd[cmd.index("run") + 1]).is_file()
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.maxUploadSize") + 1] == "50"
    assert seen["env"]["RSSEG_DATA_DIR"] == str(viewer_data["data"].resolve())
    assert "RSSEG_TILES" not in seen["env"] or seen["env"]["RSSEG_TILES"] != "0"
    # the tile server listens on 127.0.0.1 only, so a viewer served to the network uses the overlays
    result = CliRunner().invoke(main, ["app", "--data-dir", str(viewer_data["data"]), "--host", "0.0.0.0", "--headless"])
    assert result.exit_code == 0 and seen["env"]["RSSEG_TILES"] == "0" and "warning" in result.output
    bad = CliRunner().invoke(main, ["app", "--data-dir", str(viewer_data["data"] / "nope")])
    assert bad.exit_code == 2 and "does not exist" in bad.output


def test_app_on_a_symlinked_data_dir_without_tiles(viewer_data: dict[str, Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    link = tmp_path / "data-link"
    link.symlink_to(viewer_data["data"], target_is_directory=True)
    monkeypatch.setenv("RSSEG_DATA_DIR", str(link))
    monkeypatch.setenv("RSSEG_CACHE_DIR", str(viewer_data["cache"] / "app"))
    monkeypatch.setenv("RSSEG_TILES", "0")  # as `rsseg app --host 0.0.0.0` sets it
    at = AppTest.from_file(str(viewer.app_script()), default_timeout=300)
    at.run()
    assert not at.exception and not at.error
    assert at.selectbox(key="raster").options == ["small.tif", "small_mask.tif"]
    # the symlink that leads outside is named, with the fix
    assert any("link.tif" in c.value and "--data-dir" in c.value for c in at.caption)
    # the map shows capped overviews: one line in the panel says so
    assert [i.value for i in at.info if "overview images" in i.value and "not full resolution" in i.value]


def test_cli_app_moves_off_a_busy_default_port(viewer_data: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import socket

    import rsseg.cli.app as app_cli
    from rsseg.cli.main import main

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        busy = held.getsockname()[1]
        assert not app_cli.port_free("127.0.0.1", busy)
        assert app_cli.pick_port("127.0.0.1", busy, chosen=False) > busy
        with pytest.raises(RsSegError, match=f"port {busy} on 127.0.0.1 is already in use.*--port"):
            app_cli.pick_port("127.0.0.1", busy, chosen=True)
    seen = {}

    def fake_exec(path: str, cmd: list[str], env: dict[str, str]) -> None:
        seen.update(cmd=cmd)
        raise SystemExit(0)

    monkeypatch.setattr(os, "execve", fake_exec)
    monkeypatch.setattr(app_cli, "port_free", lambda host, port: port != 8501)  # the default port is taken
    result = CliRunner().invoke(main, ["app", "--data-dir", str(viewer_data["data"]), "--headless"])
    assert result.exit_code == 0, result.output
    assert seen["cmd"][seen["cmd"].index("--server.port") + 1] == "8502"
    lines = result.output.splitlines()
    assert lines[0].startswith("port 8501 is in use; serving on 8502") and "http://127.0.0.1:8502" in lines[1]
