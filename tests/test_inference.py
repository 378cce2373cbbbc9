"""rsseg.inference: window plan, blending, streaming predict_file, COG, vectors, reports, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from conftest import uint8_contract, write_raster
from rasterio.crs import CRS
from rio_cogeo.cogeo import cog_validate
from torch import nn

from rsseg.checkpoint import ModelMeta
from rsseg.errors import RsSegError
from rsseg.inference import (
    Predictor,
    RowBlender,
    area_report,
    blend_weight,
    plan_windows,
    polygonize,
    predict_file,
    vectorize,
)
from rsseg.inference.windows import WindowPlan

TILE, OVERLAP = 64, 16


def make_meta(k: int = 3, bands: int = 3) -> ModelMeta:
    palette = ["#000000", "#ff0000", "#00ff00", "#0000ff", "#ffff00"]
    return ModelMeta(classes=[f"c{i}" for i in range(k)], colors=palette[:k], bands=[f"b{i}" for i in range(bands)],
                     mean=[0.5] * bands, std=[0.25] * bands, scale=255.0, patch_size=TILE,
                     **uint8_contract(bands))


def conv_model(kernel: int, k: int = 3, c: int = 3, seed: int = 0) -> nn.Module:
    """Tiny local model: receptive field ``kernel`` pixels (zero padding inside, like real CNNs)."""
    torch.manual_seed(seed)
    return nn.Conv2d(c, k, kernel, padding=kernel // 2).eval()


def predictor(kernel: int = 1, tile: int = TILE, overlap: int = OVERLAP, **kw) -> Predictor:
    return Predictor.from_model(conv_model(kernel), make_meta(), tile=tile, overlap=overlap, batch=3, device="cpu", **kw)


def smooth_image(h: int, w: int, c: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = [np.sin(xx / (7 + i)) + np.cos(yy / (5 + 2 * i)) for i in range(c)]
    img = (np.stack(base) + 2) / 4 * 255 + rng.normal(0, 8, (c, h, w))
    return np.clip(img, 0, 255).astype(np.uint8)


# -- window plan & blending ------------------------------------------------------------------
@pytest.mark.parametrize("size", [(200, 90), (64, 64), (65, 200), (23, 17)])
def test_plan_covers_raster_with_windows_inside(size):
    w, h = size
    wins = plan_windows(w, h, TILE, OVERLAP)
    cover = np.zeros((h, w), int)
    for win in wins:
        assert win.col_off >= 0 and win.row_off >= 0
        assert win.col_off + win.width <= w and win.row_off + win.height <= h
        assert (win.width, win.height) == (min(TILE, w), min(TILE, h))
        cover[win.row_off:win.row_off + win.height, win.col_off:win.col_off + win.width] += 1
    assert cover.min() >= 1
    rows = [win.row_off for win in wins]
    assert rows == sorted(rows)  # row-major, as the streaming blender requires


def test_plan_rejects_bad_tiling():
    with pytest.raises(RsSegError, match="overlap"):
        plan_windows(100, 100, 64, 64)
    with pytest.raises(RsSegError, match="empty"):
        plan_windows(0, 100, 64, 16)


def test_blend_weight_is_positive_and_ramps():
    wgt = blend_weight(64, 64, 16)
    assert wgt.min() > 0 and wgt.max() == pytest.approx(1.0)
    assert wgt[0, 0] < wgt[8, 8] < wgt[32, 32]
    assert np.all(blend_weight(10, 12, 0) == 1)


def test_row_blender_memory_is_one_tile_high():
    rb = RowBlender(3, WindowPlan(300, 5000, TILE, OVERLAP), lambda *a: None)
    assert rb.acc.shape == (3, TILE, 300)  # never the raster height


def _buffer_bytes(obj: object) -> int:
    """Bytes held by the arrays/tensors an object keeps (directly or in dict/list attributes)."""
    def size(v: object) -> int:
        if isinstance(v, np.ndarray):
            return v.nbytes
        if isinstance(v, torch.Tensor):
            return v.numel() * v.element_size()
        if isinstance(v, dict):
            return sum(size(x) for x in v.values())
        if isinstance(v, (list, tuple)):
            return sum(size(x) for x in v)
        return 0
    return sum(size(v) for v in vars(obj).values())


def test_row_blender_buffers_do_not_grow_with_height():
    k, width = 7, 1000
    sizes = []
    for height in (200, 5000, 50000):
        rb = RowBlender(k, WindowPlan(width, height, TILE, OVERLAP), lambda *a: None)
        assert rb.acc.dtype == np.float16
        sizes.append(_buffer_bytes(rb))
    assert sizes[0] == sizes[1] == sizes[2]
    # the float16 ring (K x tile x width) plus O(width) weight vectors, nothing else
    assert sizes[0] <= k * TILE * width * 2 + 4 * 4 * width


def test_float16_blend_matches_float64_reference():
    """Overlapping windows of a local model with 7 classes: the streamed float16 blend equals a
    float64 whole-image accumulation of the same windows and weights (incl. pulled-in edges)."""
    k, h, w = 7, 150, 170
    model = nn.Conv2d(3, k, 5, padding=2).eval()
    torch.manual_seed(1)
    nn.init.normal_(model.weight, std=0.5)
    img = torch.from_numpy(smooth_image(h, w).astype(np.float32) / 255)
    got = torch.from_numpy(
        Predictor.from_model(model, make_meta(k=k), tile=TILE, overlap=OVERLAP, batch=3, device="cpu").predict_probs(img))
    acc, wsum = np.zeros((k, h, w)), np.zeros((h, w))
    for win in plan_windows(w, h, TILE, OVERLAP):
        ys, xs = slice(win.row_off, win.row_off + win.height), slice(win.col_off, win.col_off + win.width)
        p = _whole(model, img[:, ys, xs]).double().numpy()
        wgt = blend_weight(win.height, win.width, OVERLAP)
        acc[:, ys, xs] += p * wgt
        wsum[ys, xs] += wgt
    ref = acc / wsum
    assert np.abs(got.numpy() - ref).max() < 2e-3
    assert got.sum(0).sub(1).abs().max() < 3e-3  # normalised weights: probabilities still sum to 1
    margin = np.sort(ref, 0)[-1] - np.sort(ref, 0)[-2]
    agree = got.argmax(0).numpy() == ref.argmax(0)
    assert agree[margin > 2e-3].all() and agree.mean() > 0.999


def test_row_blender_hands_out_every_row_once_in_short_bands():
    from rsseg.inference.blend import BAND_ROWS

    width, height, tile, overlap = 40, 1300, 600, 100
    seen: list[tuple[int, int]] = []
    plan = WindowPlan(width, height, tile, overlap)
    wins = plan.windows
    rb = RowBlender(2, plan, lambda y0, x0, p: seen.append((y0, p.shape[1])))
    for win in wins:
        rb.add(win, np.full((2, win.height, win.width), 0.5, np.float16))
    assert rb.complete and all(n <= BAND_ROWS for _, n in seen)
    assert [y0 for y0, _ in seen] == list(np.cumsum([0] + [n for _, n in seen[:-1]]))
    assert sum(n for _, n in seen) == height


def test_gdal_block_cache_is_sized_by_width_not_height():
    from types import SimpleNamespace

    from rsseg.inference.memory import block_cache

    def cache(width: int, height: int) -> int:
        src = SimpleNamespace(width=width, height=height, count=3, dtypes=("uint8",) * 3)
        return block_cache(src, 1024).options["GDAL_CACHEMAX"]

    assert cache(32768, 5000) == cache(32768, 10**6) == (1024 + 512) * 32768 * 3  # one window row of blocks
    assert cache(32768, 10**6) < 2**28
    assert cache(500, 300) == 64 * 2**20  # floor for small rasters


# -- tiling equals whole-image inference -----------------------------------------------------
def _whole(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(model(x[None]), 1)[0]


def test_tiled_equals_whole_image_for_pointwise_model():
    img = torch.from_numpy(smooth_image(150, 210).astype(np.float32) / 255)
    p = predictor(kernel=1)
    tiled = torch.from_numpy(p.predict_probs(img))
    whole = _whole(p.engine.model, img)
    assert tiled.shape == whole.shape == (3, 150, 210)
    # float16 transfer of probabilities is the only approximation
    assert torch.allclose(tiled, whole, atol=2e-3)
    assert torch.equal(tiled.argmax(0)[(tiled.max(0).values - tiled.median(0).values) > 0.01],
                       whole.argmax(0)[(tiled.max(0).values - tiled.median(0).values) > 0.01])


def test_blending_removes_seams_of_local_model():
    img = torch.from_numpy(smooth_image(160, 160).astype(np.float32) / 255)
    model = conv_model(5)
    whole = _whole(model, img)[:, 4:-4, 4:-4]
    hard = Predictor.from_model(model, make_meta(), tile=TILE, overlap=0, batch=2, device="cpu").predict_probs(img)[:, 4:-4, 4:-4]
    blended = Predictor.from_model(model, make_meta(), tile=TILE, overlap=OVERLAP, batch=2, device="cpu").predict_probs(img)
    hard, blended = torch.from_numpy(hard), torch.from_numpy(blended)
    blended = blended[:, 4:-4, 4:-4]
    # without overlap the zero padding at each tile edge shows as a seam
    assert (hard - whole).abs().max() > 0.02
    # with overlap the tile edges get (almost) no weight: interior equals whole-image inference
    assert (blended - whole).abs().max() < 5e-3


def test_flip_and_d4_tta_are_exact_for_equivariant_model():
    img = torch.from_numpy(smooth_image(70, 90).astype(np.float32) / 255)
    base = predictor(kernel=1).predict_probs(img)
    for tta in ("flip", "d4"):
        np.testing.assert_allclose(predictor(kernel=1, tta=tta).predict_probs(img), base, atol=2e-3)
    ms = predictor(kernel=1, tta="ms").predict_probs(img)
    assert ms.shape == base.shape
    np.testing.assert_allclose(ms.sum(0), np.ones((70, 90)), atol=1e-2)


def test_predict_array_normalises_raw_pixels():
    raw = smooth_image(40, 50)
    p = predictor(kernel=1)
    cls = p.predict_array(raw)
    x = torch.from_numpy(p.normalise(raw))
    assert cls.dtype == np.uint8 and cls.shape == (40, 50)
    agree = (cls == _whole(p.engine.model, x).argmax(0).numpy()).mean()
    assert agree > 0.999
    with pytest.raises(RsSegError, match="needs"):
        p.predict_array(raw[:2])


# -- predict_file ----------------------------------------------------------------------------
@pytest.mark.parametrize("crs,transform", [
    ("EPSG:32633", Affine(2.0, 0, 500000, 0, -2.0, 100000)),
    ("EPSG:4326", Affine(1e-5, 0, 30.0, 0, -1e-5, -1.0)),
])
def test_output_grid_matches_input_and_is_a_cog(tmp_path, crs, transform):
    src = write_raster(tmp_path / "in.tif", smooth_image(90, 200), crs=crs, transform=transform)
    out = tmp_path / "out.tif"
    res = predict_file(predictor(kernel=3), src, out, confidence_path=tmp_path / "conf.tif")
    with rasterio.open(src) as a, rasterio.open(out) as b, rasterio.open(tmp_path / "conf.tif") as c:
        assert (b.width, b.height, b.crs, b.transform) == (a.width, a.height, a.crs, a.transform)
        assert (c.width, c.height, c.crs, c.transform) == (a.width, a.height, a.crs, a.transform)
        assert b.dtypes[0] == "uint8" and b.nodata == 255
        assert b.colormap(1)[1] == (255, 0, 0, 255)
        assert b.tags()["CLASS_NAMES"] == "c0,c1,c2" and "c2" in b.descriptions[0]
        cls = b.read(1)
        assert cls.max() < 3 and c.read(1).min() >= 255 // 3
    assert cog_validate(str(out))[0] and cog_validate(str(tmp_path / "conf.tif"))[0]
    assert res.report["valid_pixels"] == 90 * 200
    assert [f.name for f in tmp_path.iterdir() if f.name.startswith(".")] == []  # no temp leftovers


def test_file_output_equals_in_memory_prediction(tmp_path):
    raw = smooth_image(130, 170)
    src = write_raster(tmp_path / "in.tif", raw)
    p = predictor(kernel=3)
    predict_file(p, src, tmp_path / "out.tif")
    with rasterio.open(tmp_path / "out.tif") as ds:
        assert np.array_equal(ds.read(1), p.predict_array(raw))


def test_nodata_collar_is_respected(tmp_path, shared_data):
    src = shared_data / "landsat" / "RGB.byte.tif"
    out = tmp_path / "landsat.tif"
    res = predict_file(Predictor.from_model(conv_model(3), make_meta(), tile=256, overlap=64, batch=4, device="cpu"), src, out)
    with rasterio.open(src) as a, rasterio.open(out) as b:
        invalid = (a.read_masks() == 0).all(axis=0)
        cls = b.read(1)
        assert (b.crs, b.transform, b.shape) == (a.crs, a.transform, a.shape)
    assert invalid.any() and (~invalid).any()
    assert np.all(cls[invalid] == 255) and np.all(cls[~invalid] < 3)
    assert res.report["nodata_pixels"] == int(invalid.sum())


def test_small_raster_and_band_selection(tmp_path):
    raw = smooth_image(23, 17, c=4)
    src = write_raster(tmp_path / "small.tif", raw)
    p = predictor(kernel=1)
    predict_file(p, src, tmp_path / "out.tif", bands=[3, 1, 2])
    with rasterio.open(tmp_path / "out.tif") as ds:
        assert ds.shape == (23, 17)
        assert np.array_equal(ds.read(1), p.predict_array(raw[[2, 0, 1]]))


def test_input_without_crs_warns_and_keeps_grid(tmp_path):
    src = write_raster(tmp_path / "nocrs.tif", smooth_image(40, 70), crs=None, transform=Affine(1, 0, 10, 0, -1, 50))
    with pytest.warns(UserWarning, match="no CRS"):
        predict_file(predictor(), src, tmp_path / "out.tif")
    with rasterio.open(tmp_path / "out.tif") as ds:
        assert ds.crs is None and ds.transform == Affine(1, 0, 10, 0, -1, 50) and ds.shape == (40, 70)


# -- vectors ---------------------------------------------------------------------------------
def _class_raster(path: Path, cls: np.ndarray, crs: str = "EPSG:32633",
                  transform: Affine | None = None) -> Path:
    transform = transform or Affine(2.0, 0, 500000, 0, -2.0, 100000)
    return write_raster(path, cls[None].astype(np.uint8), crs=crs, transform=transform, nodata=255)


def test_polygons_dissolve_across_window_borders(tmp_path):
    cls = np.zeros((128, 128), np.uint8)
    cls[30:90, 20:110] = 1  # spans the four 64x64 windows
    cls[100:120, 5:15] = 2
    cls[0:3, :] = 255
    path = _class_raster(tmp_path / "cls.tif", cls)
    gdf = polygonize(path, ["bg", "rect", "small"], window_size=64)
    rect = gdf[gdf.class_id == 1]
    assert len(rect) == 1
    assert rect.geometry.iloc[0].area == pytest.approx(60 * 90 * 4)  # 2 m pixels
    assert rect.area_m2.iloc[0] == pytest.approx(60 * 90 * 4, rel=2e-3)  # geodesic vs UTM grid scale
    assert len(gdf[gdf.class_id == 0]) == 1 and gdf.class_name.tolist().count("small") == 1
    assert gdf.crs == CRS.from_epsg(32633)
    # min_area drops the 10x20 px square, simplify keeps the rectangle's area
    assert (polygonize(path, ["bg", "rect", "small"], min_area=1000, window_size=64).class_id == 2).sum() == 0
    simple = polygonize(path, ["bg", "rect", "small"], simplify=3.0, window_size=64)
    assert simple[simple.class_id == 1].area_m2.iloc[0] == pytest.approx(60 * 90 * 4, rel=2e-3)


@pytest.mark.parametrize("ext", [".gpkg", ".shp", ".geojson"])
def test_vector_formats(tmp_path, ext):
    cls = np.zeros((50, 60), np.uint8)
    cls[10:20, 10:40] = 1
    path = _class_raster(tmp_path / "cls.tif", cls)
    n = vectorize(path, tmp_path / f"poly{ext}", ["bg", "fg"], window_size=32)
    back = gpd.read_file(tmp_path / f"poly{ext}")
    assert n == len(back) == 2 and set(back.columns) >= {"class_id", "class_name", "area_m2"}
    assert sorted(back.class_name) == ["bg", "fg"]
    assert back.crs == CRS.from_epsg(4326 if ext == ".geojson" else 32633)  # GeoJSON: RFC 7946


def test_geographic_areas_are_plausible(tmp_path):
    # 1e-4 degree pixels at 60 N: about 11.1 m x 5.6 m
    cls = np.zeros((100, 100), np.uint8)
    cls[:, 50:] = 1
    path = _class_raster(tmp_path / "geo.tif", cls, crs="EPSG:4326", transform=Affine(1e-4, 0, 10, 0, -1e-4, 60.005))
    rep = area_report(path, ["a", "b"], rows_per_band=30)
    a, e2, lat = 6378137.0, 0.00669437999014, math.radians(60)
    w = 1 - e2 * math.sin(lat) ** 2
    meridian, prime = a * (1 - e2) / w**1.5, a / w**0.5  # WGS84 radii of curvature
    expect = meridian * prime * math.cos(lat) * math.radians(1e-4) ** 2 * 100 * 100
    assert rep["total_area_m2"] == pytest.approx(expect, rel=1e-3)
    assert rep["classes"][1]["area_fraction"] == pytest.approx(0.5, abs=0.001)
    gdf = polygonize(path, ["a", "b"], window_size=40)
    assert gdf.area_m2.sum() == pytest.approx(rep["total_area_m2"], rel=1e-3)


# -- report with a reference -----------------------------------------------------------------
def test_report_with_reference(tmp_path):
    metrics = pytest.importorskip("rsseg.metrics")
    if not hasattr(metrics, "segmentation_scores"):
        pytest.skip("rsseg.metrics does not export segmentation_scores yet")
    raw = smooth_image(80, 100)
    src = write_raster(tmp_path / "in.tif", raw)
    p = predictor(kernel=1)
    pred = p.predict_array(raw)
    ref = pred.copy()
    ref[:10] = (ref[:10] + 1) % 3  # 10 wrong rows
    ref[-5:] = 255  # ignored
    write_raster(tmp_path / "ref.tif", ref[None])
    res = predict_file(p, src, tmp_path / "out.tif", reference_path=tmp_path / "ref.tif",
                       report_path=tmp_path / "rep.json")
    rep = json.loads((tmp_path / "rep.json").read_text())
    assert rep == json.loads(json.dumps(res.report))
    conf = np.array(rep["metrics"]["confusion_matrix"])
    assert conf.sum() == 75 * 100 and np.trace(conf) == 65 * 100
    assert rep["metrics"]["OA"] == pytest.approx(65 / 75)
    assert {"OA", "mIoU", "mF1", "per_class", "classes"} <= set(rep["metrics"])  # the keys of rsseg evaluate


# -- bad inputs ------------------------------------------------------------------------------
def test_band_count_mismatch(tmp_path):
    src = write_raster(tmp_path / "one.tif", smooth_image(30, 30, c=1))
    out = tmp_path / "out.tif"
    with pytest.raises(RsSegError, match=r"1 band.*needs 3.*--bands"):
        predict_file(predictor(), src, out)
    with pytest.raises(RsSegError, match="out of range"):
        predict_file(predictor(), src, out, bands=[1, 1, 2])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.tif"]


def test_unreadable_and_empty_inputs(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_text("not a raster")
    with pytest.raises(RsSegError, match="cannot read input raster"):
        predict_file(predictor(), bad, tmp_path / "out.tif")
    with pytest.raises(RsSegError, match="not found"):
        predict_file(predictor(), tmp_path / "missing.tif", tmp_path / "out.tif")
    empty = tmp_path / "empty.vrt"
    empty.write_text('<VRTDataset rasterXSize="0" rasterYSize="0"></VRTDataset>')
    with pytest.raises(RsSegError, match="empty|cannot read"):
        predict_file(predictor(), empty, tmp_path / "out.tif")
    assert not (tmp_path / "out.tif").exists()


def test_existing_targets_and_unwritable_dir(tmp_path):
    src = write_raster(tmp_path / "in.tif", smooth_image(30, 30))
    (tmp_path / "rep.json").write_text("{}")
    with pytest.raises(RsSegError, match="already exists"):
        predict_file(predictor(), src, tmp_path / "out.tif", report_path=tmp_path / "rep.json")
    assert not (tmp_path / "out.tif").exists()  # checked before any work
    with pytest.raises(RsSegError, match="does not exist"):
        predict_file(predictor(), src, tmp_path / "nodir" / "out.tif")
    with pytest.raises(RsSegError, match="unsupported vector format"):
        predict_file(predictor(), src, tmp_path / "out.tif", vector_path=tmp_path / "v.xyz")
    res = predict_file(predictor(), src, tmp_path / "out.tif", report_path=tmp_path / "rep.json", overwrite=True)
    assert json.loads((tmp_path / "rep.json").read_text())["valid_pixels"] == 900 == res.report["valid_pixels"]


class _Exploding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = conv_model(1)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 3:
            raise KeyboardInterrupt  # like Ctrl-C mid-run
        return self.conv(x)


def test_interrupted_run_leaves_nothing(tmp_path):
    src = write_raster(tmp_path / "in.tif", smooth_image(200, 200))
    p = Predictor.from_model(_Exploding(), make_meta(), tile=TILE, overlap=OVERLAP, batch=2, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        predict_file(p, src, tmp_path / "out.tif", vector_path=tmp_path / "v.gpkg")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["in.tif"]


def _meta_with_inference(**inference) -> ModelMeta:
    from rsseg.config import Config

    cfg = Config().to_dict()
    cfg["inference"].update(inference)
    return ModelMeta(classes=["a", "b"], colors=["#000000", "#ffffff"], bands=["r", "g", "b"],
                     mean=[0.5] * 3, std=[0.25] * 3, config=cfg)


def test_predictor_settings_come_from_the_checkpoint_config_and_flags():
    from rsseg.inference.settings import CPU_MAX_BATCH

    meta = _meta_with_inference(tile=512, overlap=128, batch=8, tta="flip")
    model = torch.nn.Conv2d(3, 2, 1)
    p = Predictor.from_model(model, meta, device="cpu")
    assert (p.settings.tile, p.settings.overlap, p.settings.batch, p.settings.tta) == (512, 128, CPU_MAX_BATCH["torch"], "flip")
    p = Predictor.from_model(model, meta, tile=128, batch=3, tta="none", device="cpu")
    assert (p.settings.tile, p.settings.overlap, p.settings.batch, p.settings.tta) == (128, 32, 3, "none")  # overlap shrinks to fit the tile

# -- one factory: checkpoint config -> CPU/GPU rule -> overrides ------------------------------
def _tiny_checkpoint(path: Path, **inference) -> Path:
    from rsseg.checkpoint import save_model
    from rsseg.config import Config
    from rsseg.models import build_model

    cfg = Config()
    cfg.model.encoder, cfg.model.decode_channels, cfg.model.embed_dim, cfg.model.num_heads = "mobilenetv3_small_050", 32, 16, 4
    model = build_model(cfg.model, num_classes=2, in_channels=3)
    d = cfg.to_dict()
    d["inference"].update(inference)
    meta = ModelMeta(classes=["a", "b"], colors=["#000000", "#ffffff"], bands=["r", "g", "b"], mean=[0.5] * 3,
                     std=[0.25] * 3, config=d, **uint8_contract())
    return save_model(path, model, meta)


def test_checkpoint_metadata_and_tiling_resolve_without_torch(tmp_path):
    """A Dask client plans row strips from the metadata alone: torch is never imported for it."""
    from conftest import run_without_torch

    ckpt = _tiny_checkpoint(tmp_path / "m.ckpt", tile=256, overlap=64)
    code = ("from rsseg.checkpoint import read_meta\n"
            "from rsseg.inference.settings import resolve_tiling\n"
            f"meta = read_meta({str(ckpt)!r})\n"
            "assert meta.classes == ['a', 'b'] and resolve_tiling(meta, overlap=32)[:2] == (256, 32)\n")
    proc = run_without_torch(code, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_from_checkpoint_resolves_config_then_device_then_overrides(tmp_path, monkeypatch):
    from rsseg.checkpoint import read_meta
    from rsseg.inference import resolve_settings
    from rsseg.inference.settings import CPU_MAX_BATCH

    ckpt = _tiny_checkpoint(tmp_path / "m.ckpt", tile=256, overlap=64, batch=6, tta="d4")
    p = Predictor.from_checkpoint(ckpt, device="cpu")
    s = p.settings
    assert (s.tile, s.overlap, s.batch, s.tta, s.device) == (256, 64, CPU_MAX_BATCH["torch"], "d4", "cpu")
    p = Predictor.from_checkpoint(ckpt, device="cpu", tile=128, batch=5, tta="none")
    assert (p.settings.tile, p.settings.overlap, p.settings.batch, p.settings.tta) == (128, 64, 5, "none")  # the caller's values win
    assert next(p.engine.model.parameters()).device.type == "cpu"
    meta = read_meta(ckpt)
    with pytest.raises(RsSegError, match="tile must be positive"):  # 0 is refused, not read as "unset"
        Predictor.from_model(conv_model(1, k=2), meta, device="cpu", tile=0)
    with pytest.raises(RsSegError, match="unknown TTA mode"):
        Predictor.from_model(conv_model(1, k=2), meta, device="cpu", tta="rot")
    # on a GPU the configured batch applies (the CPU cap is the middle layer, under the overrides)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    s = resolve_settings(meta, device="auto")
    assert (s.device, s.batch, s.tile) == ("cuda", 6, 256)
    assert resolve_settings(meta, device="auto", batch=1).batch == 1


def test_tta_modes_have_one_home():
    import typing

    from rsseg import config
    from rsseg.inference import TTA_MODES

    assert TTA_MODES is config.TTA_MODES and typing.get_args(config.TTAMode) == TTA_MODES


# -- progress callbacks -----------------------------------------------------------------------
def test_progress_callback_is_monotonic_ends_at_total_and_nothing_is_printed(tmp_path, capsys):
    import threading

    raw = smooth_image(150, 170)
    src = write_raster(tmp_path / "in.tif", raw)
    calls, threads = [], set()

    def on_progress(done: int, total: int) -> None:
        calls.append((done, total))
        threads.add(threading.get_ident())

    capsys.readouterr()
    predict_file(predictor(kernel=3), src, tmp_path / "out.tif", report_path=tmp_path / "r.json", on_progress=on_progress)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""  # library code prints nothing
    total = len(plan_windows(170, 150, TILE, OVERLAP))
    assert total > 3 and {t for _, t in calls} == {total}
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(set(done)) == len(done) and done[-1] == total
    assert threads == {threading.get_ident()}  # the calling thread: UI toolkits may be driven from it
    calls.clear()
    predictor(kernel=1).predict_array(raw, on_progress=on_progress)
    assert calls[-1] == (total, total)


# -- output products are writers --------------------------------------------------------------
from rsseg.inference import ProductWriter, RasterWriter  # noqa: E402


class EntropyWriter(RasterWriter):
    """A new product in one class: normalised entropy of the probabilities x 254 (255 = nodata)."""

    name = "entropy"

    def values(self, rows, probs):
        out = _entropy_u8(probs)
        if rows.nodata is not None:
            out[rows.nodata] = 255
        return out


def _entropy_u8(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs.astype(np.float32), 1e-7, None)
    h = -(p * np.log(p)).sum(0) / math.log(p.shape[0])
    return np.round(np.clip(h, 0, 1) * 254).astype(np.uint8)


def test_a_new_product_is_one_writer_class_and_round_trips(tmp_path):
    raw = smooth_image(90, 110)
    src = write_raster(tmp_path / "in.tif", raw)
    p = predictor(kernel=3)
    res = predict_file(p, src, tmp_path / "out.tif", products=[EntropyWriter(tmp_path / "entropy.tif")])
    assert res.products == {"classes": tmp_path / "out.tif", "entropy": tmp_path / "entropy.tif"}
    expected = _entropy_u8(p.predict_array(raw, return_probs=True))
    with rasterio.open(tmp_path / "entropy.tif") as ds, rasterio.open(src) as s:
        got = ds.read(1)
        assert (ds.crs, ds.transform, ds.shape) == (s.crs, s.transform, s.shape) and ds.nodata == 255
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1 and got.std() > 0
    # no temp left; the class raster's sidecars (GDAL attribute table, QGIS style) beside it
    assert sorted(f.name for f in tmp_path.iterdir()) == ["entropy.tif", "in.tif", "out.qml", "out.tif",
                                                          "out.tif.aux.xml"]


class _FailingWriter(ProductWriter):
    name = "failing"

    def write(self, rows, probs):
        raise OSError("No space left on device")


def test_writers_are_checked_before_work_and_aborted_on_failure(tmp_path):
    src = write_raster(tmp_path / "in.tif", smooth_image(70, 80))
    with pytest.raises(RsSegError, match="entropy and classes outputs are both"):
        predict_file(predictor(), src, tmp_path / "out.tif", products=[EntropyWriter(tmp_path / "out.tif")])
    with pytest.raises(OSError, match="no space left on device"):
        predict_file(predictor(), src, tmp_path / "out.tif", confidence_path=tmp_path / "conf.tif",
                     report_path=tmp_path / "r.json", products=[EntropyWriter(tmp_path / "e.tif"), _FailingWriter(None)])
    assert sorted(f.name for f in tmp_path.iterdir()) == ["in.tif"]  # no target, no temporary folder


# -- one scoring path: predict --reference and evaluate share one validation ------------------
def _reference_case(tmp_path: Path):
    raw = smooth_image(60, 70)
    src = write_raster(tmp_path / "in.tif", raw)
    p = predictor(kernel=1)
    return src, p, p.predict_array(raw)


def test_predict_reference_out_of_range_is_an_error_not_an_ignored_pixel(tmp_path):
    src, p, pred = _reference_case(tmp_path)
    ref = pred.copy()
    ref[3, :4] = 7  # K = 3: not a class, not the ignore value
    write_raster(tmp_path / "ref.tif", ref[None])
    with pytest.raises(RsSegError, match=r"values \[7\] outside the 3 classes"):
        predict_file(p, src, tmp_path / "out.tif", reference_path=tmp_path / "ref.tif", report_path=tmp_path / "r.json")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["in.tif", "ref.tif"]
    ref[3, :4] = 255  # the ignore value is fine, and so is the reference's own nodata
    ref[4, :4] = 9
    write_raster(tmp_path / "ref.tif", ref[None], nodata=9)
    res = predict_file(p, src, tmp_path / "out.tif", reference_path=tmp_path / "ref.tif")
    assert res.report["metrics"]["OA"] == 1.0
    assert np.array(res.report["metrics"]["confusion_matrix"]).sum() == 60 * 70 - 8


@pytest.mark.parametrize("grid", ["transform", "crs", "size"])
def test_predict_and_evaluate_refuse_a_reference_on_another_grid(tmp_path, grid):
    from rsseg.inference.scoring import score_rasters

    src, p, pred = _reference_case(tmp_path)
    kw = {"transform": Affine(2.0, 0, 500010, 0, -2.0, 100000)} if grid == "transform" else (
        {"crs": "EPSG:32634"} if grid == "crs" else {})
    ref = pred[None] if grid != "size" else pred[None, :-1]
    write_raster(tmp_path / "ref.tif", ref, **kw)
    msg = {"transform": "transforms", "crs": "CRS differ", "size": "same grid"}[grid]
    with pytest.raises(RsSegError, match=msg):
        predict_file(p, src, tmp_path / "out.tif", reference_path=tmp_path / "ref.tif")
    predict_file(p, src, tmp_path / "out.tif")
    with pytest.raises(RsSegError, match=msg):
        score_rasters(tmp_path / "out.tif", tmp_path / "ref.tif", num_classes=3)


def test_evaluate_refuses_prediction_ids_beyond_the_classes_and_bad_references(tmp_path):
    from rsseg.inference.scoring import score_rasters

    pred = np.zeros((1, 20, 30), np.uint8)
    pred[0, :5] = 1
    write_raster(tmp_path / "ref.tif", pred.copy())
    pred[0, 0, 0] = 4  # a 5-class raster scored as 3 classes: never silently class 0
    write_raster(tmp_path / "pred.tif", pred)
    with pytest.raises(RsSegError, match=r"class ids \[4\] but only 3 classes"):
        score_rasters(tmp_path / "pred.tif", tmp_path / "ref.tif", num_classes=3)
    ref = pred.copy()
    ref[0, 0, 0], ref[0, 1, 1] = 0, 3
    write_raster(tmp_path / "ref2.tif", ref)
    pred[0, 0, 0] = 255  # prediction nodata is not scored
    write_raster(tmp_path / "pred.tif", pred, nodata=255)
    with pytest.raises(RsSegError, match=r"values \[3\] outside the 3 classes"):
        score_rasters(tmp_path / "pred.tif", tmp_path / "ref2.tif", num_classes=3)
    conf = score_rasters(tmp_path / "pred.tif", tmp_path / "ref.tif", num_classes=3)
    assert conf.sum() == 20 * 30 - 1 and np.trace(conf) == conf.sum()


def test_confusion_accumulator_float_reference_with_nan_nodata():
    from rsseg.inference import ConfusionAccumulator

    acc = ConfusionAccumulator(2, reference_nodata=float("nan"))
    acc.update(np.array([[0, 1, 1]], np.uint8), np.array([[0.0, np.nan, 1.0]], np.float32))
    assert acc.conf.tolist() == [[1, 0], [0, 1]]
    with pytest.raises(RsSegError, match=r"values \[0.5\]"):
        acc.update(np.array([[0]], np.uint8), np.array([[0.5]], np.float32))
    with pytest.raises(RsSegError, match="values"):  # NaN that is not the nodata value is not a class
        ConfusionAccumulator(2).update(np.array([[0]], np.uint8), np.array([[np.nan]], np.float32))
