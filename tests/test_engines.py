"""Inference engines (torch, ONNX Runtime): same probabilities, TTA included; the export cache;
the engine choice in the factory and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from conftest import SAMPLE_TILES, uint8_contract
from rasterio.windows import Window
from torch import nn

import rsseg
from rsseg.checkpoint import ModelMeta, file_sha256, save_model
from rsseg.config import TTA_MODES, Config
from rsseg.errors import RsSegError
from rsseg.inference import Predictor, engines, predict_file, settings
from rsseg.inference.engines import OnnxEngine, TorchEngine, _bilinear_axis, cached_onnx, onnx_cache_paths

ort = pytest.importorskip("onnxruntime")
TANZANIA = SAMPLE_TILES / "tanzania" / "image.tif"


def _meta(k: int, config: dict | None = None) -> ModelMeta:
    return ModelMeta(classes=[f"c{i}" for i in range(k)], colors=["#%06x" % (40 * i) for i in range(k)],
                     bands=["r", "g", "b"], mean=[0.5] * 3, std=[0.25] * 3, config=config or Config().to_dict(),
                     **uint8_contract())


def _export(model: nn.Module, path: Path, meta: ModelMeta) -> Path:
    """Export ``model`` with dynamic sizes and the rsseg metadata, as the cache does."""
    import onnx

    from rsseg.models import export_onnx

    export_onnx(model, path, in_channels=3, height=64, width=64)
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "rsseg", json.dumps(meta.to_dict())
    onnx.save(proto, str(path))
    return path


@pytest.fixture(scope="module")
def conv_pair(tmp_path_factory):
    """A small spatially asymmetric conv net (so every TTA view differs) as a torch and an ONNX engine."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, (3, 5), padding=(1, 2))).eval()
    path = _export(model, tmp_path_factory.mktemp("conv") / "conv.onnx", _meta(4))
    return TorchEngine(model, torch.device("cpu")), OnnxEngine(path)


@pytest.mark.parametrize(("n", "size"), [(96, 72), (96, 120), (64, 32), (40, 40), (33, 64)])
def test_numpy_bilinear_matches_torch_interpolate(n: int, size: int) -> None:
    x = torch.randn(2, 3, n, n + 7, generator=torch.Generator().manual_seed(n * 1000 + size))
    want = F.interpolate(x, size=(size, n + 7), mode="bilinear", align_corners=False)
    got = _bilinear_axis(x.numpy(), size, 2)
    # float32 rounding differs between the two summation orders: relative, not only absolute, tolerance
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tta", TTA_MODES)
def test_onnx_engine_equals_torch_engine_with_every_tta(conv_pair, tta: str) -> None:
    torch_engine, onnx_engine = conv_pair
    x = np.random.default_rng(1).normal(size=(2, 3, 64, 96)).astype(np.float32)
    want, got = torch_engine(x, tta), onnx_engine(x, tta)
    assert got.shape == want.shape == (2, 4, 64, 96) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(got.sum(1), 1, atol=1e-5)
    if tta != "none":  # the views really are averaged: the result differs from a single view
        assert np.abs(got - onnx_engine(x, "none")).max() > 1e-3


def test_onnx_engine_reads_the_metadata_from_the_file(conv_pair) -> None:
    meta = conv_pair[1].meta
    assert meta.classes == ["c0", "c1", "c2", "c3"] and meta.build_config().inference.tile == 1024


def test_resolve_engine(monkeypatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert settings.resolve_engine("auto", cpu) == "onnx"
    assert settings.resolve_engine("auto", cuda) == "torch"
    assert settings.resolve_engine("torch", cpu) == "torch"
    with pytest.raises(RsSegError, match="runs on the CPU"):
        settings.resolve_engine("onnx", cuda)
    with pytest.raises(RsSegError, match="unknown engine"):
        settings.resolve_engine("tensorrt", cpu)
    monkeypatch.setattr(settings, "onnxruntime_available", lambda: False)
    assert settings.resolve_engine("auto", cpu) == "torch"
    with pytest.raises(RsSegError, match=r"rsseg\[onnx\]"):
        settings.resolve_engine("onnx", cpu)


def _tiny_unetformer_checkpoint(path: Path, k: int = 7) -> Path:
    from rsseg.models import build_model

    cfg = Config()
    cfg.model.encoder, cfg.model.decode_channels, cfg.model.embed_dim, cfg.model.num_heads = "mobilenetv3_small_050", 32, 16, 4
    cfg.inference.tile, cfg.inference.overlap = 256, 64
    torch.manual_seed(3)
    model = build_model(cfg.model, num_classes=k, in_channels=3)
    return save_model(path, model, _meta(k, cfg.to_dict()))


def test_auto_engine_falls_back_to_torch_without_onnxruntime(tmp_path, monkeypatch) -> None:
    ckpt = _tiny_unetformer_checkpoint(tmp_path / "m.ckpt")
    monkeypatch.setattr(settings, "onnxruntime_available", lambda: False)
    p = Predictor.from_checkpoint(ckpt, device="cpu", engine="auto")
    assert p.engine.name == "torch" and "engine torch" in p.settings.summary()
    assert not list(tmp_path.glob("*.onnx"))


def test_export_cache_is_keyed_by_checkpoint_and_falls_back_to_the_cache_dir(tmp_path, monkeypatch) -> None:
    calls = []

    def fake_export(checkpoint, out, size=512, dynamic=True):
        calls.append(Path(out))
        Path(out).write_bytes(b"onnx")
        return Path(out), None

    monkeypatch.setattr("rsseg.checkpoint.export_checkpoint_onnx", fake_export)
    monkeypatch.setenv("RSSEG_CACHE_DIR", str(tmp_path / "cache"))
    ckpt = tmp_path / "models" / "m.ckpt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"weights v1")
    first = cached_onnx(ckpt)
    assert first.parent == ckpt.parent and first.name.startswith("m.ckpt.") and first.suffix == ".onnx"
    assert cached_onnx(ckpt) == first and len(calls) == 1  # a hit exports nothing
    assert onnx_cache_paths(ckpt, size=256)[0] != first  # export settings are part of the key
    ckpt.write_bytes(b"weights v2")
    announced = []
    second = cached_onnx(ckpt, on_export=announced.append)
    assert second != first and len(calls) == 2  # new weights, new export
    assert announced == [second] and cached_onnx(ckpt, on_export=announced.append) == second and len(announced) == 1
    # an unwritable checkpoint folder: the export goes to $RSSEG_CACHE_DIR/onnx
    ckpt.write_bytes(b"weights v3")
    real_access = engines.os.access
    monkeypatch.setattr(engines.os, "access", lambda p, mode: False if Path(p) == ckpt.parent else real_access(p, mode))
    third = cached_onnx(ckpt)
    assert third.parent == tmp_path / "cache" / "onnx" and third.is_file() and len(calls) == 3
    assert cached_onnx(ckpt) == third and len(calls) == 3
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        cached_onnx(tmp_path / "missing.ckpt")


# -- one real exported UNetFormer per test session: the dynamic-shape export takes a minute or two on an idle
# CPU (8 on a loaded one), counted in the first test's timeout ------------------------------------------------
@pytest.fixture(scope="session")
def exported_checkpoint(tmp_path_factory) -> Path:
    ckpt = _tiny_unetformer_checkpoint(tmp_path_factory.mktemp("onnx") / "tiny.ckpt")
    cached_onnx(ckpt)
    return ckpt


def _tanzania_crop(path: Path, size: int = 600) -> Path:
    with rasterio.open(TANZANIA) as src:
        profile = src.profile | {"width": size, "height": size - 120,
                                 "transform": src.window_transform(Window(200, 300, size, size - 120))}
        data = src.read(window=Window(200, 300, size, size - 120))
    profile.pop("blockxsize", None), profile.pop("blockysize", None)
    with rasterio.open(path, "w", **(profile | {"tiled": False})) as dst:
        dst.write(data)
    return path


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.skipif(not TANZANIA.is_file(), reason="sample_tiles/tanzania missing")
def test_onnx_predict_equals_torch_on_a_real_raster(exported_checkpoint, tmp_path) -> None:
    src = _tanzania_crop(tmp_path / "crop.tif")
    by_engine = {}
    for engine in ("torch", "onnx"):
        p = Predictor.from_checkpoint(exported_checkpoint, device="cpu", engine=engine)
        assert p.engine.name == engine and (p.settings.tile, p.settings.overlap) == (256, 64)
        predict_file(p, src, tmp_path / f"{engine}.tif", confidence_path=tmp_path / f"{engine}_conf.tif")
        with rasterio.open(tmp_path / f"{engine}.tif") as a, rasterio.open(tmp_path / f"{engine}_conf.tif") as c:
            by_engine[engine] = (a.read(1), c.read(1), a.profile)
        if engine == "torch":
            img = rasterio.open(src).read()
            probs = p.predict_array(img, return_probs=True)
    (cls_t, conf_t, prof_t), (cls_o, conf_o, prof_o) = by_engine["torch"], by_engine["onnx"]
    assert prof_t["transform"] == prof_o["transform"] and prof_t["crs"] == prof_o["crs"]
    top2 = np.sort(probs, axis=0)[-2:]
    near_tie = (top2[1] - top2[0]) < 2e-3  # float16 blending resolves ~1e-3
    differ = cls_t != cls_o
    assert len(np.unique(cls_t)) > 1  # a real prediction, not a constant raster
    assert not (differ & ~near_tie).any(), f"{int((differ & ~near_tie).sum())} pixels differ away from a near-tie"
    assert differ.sum() <= 0.001 * differ.size, f"{int(differ.sum())} near-tie pixels differ"
    assert np.abs(conf_t.astype(int) - conf_o.astype(int)).max() <= 1


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_onnx_engine_tta_and_meta_match_the_checkpoint(exported_checkpoint) -> None:
    from rsseg.checkpoint import read_meta

    p_onnx = Predictor.from_checkpoint(exported_checkpoint, device="cpu", engine="onnx", tta="d4")
    p_torch = Predictor.from_checkpoint(exported_checkpoint, device="cpu", engine="torch", tta="d4")
    # the export's metadata: the checkpoint's, with where it came from
    assert p_onnx.meta.to_dict() == read_meta(exported_checkpoint).to_dict() | {
        "checkpoint_sha256": file_sha256(exported_checkpoint), "rsseg_version": rsseg.__version__}
    # unset batches follow each engine's CPU cap (the checkpoint's config asks for more)
    assert (p_onnx.settings.batch, p_torch.settings.batch) == (settings.CPU_MAX_BATCH["onnx"], settings.CPU_MAX_BATCH["torch"])
    x = np.random.default_rng(0).normal(size=(1, 3, 96, 160)).astype(np.float32)
    np.testing.assert_allclose(p_onnx.forward_probs(x), p_torch.forward_probs(x), atol=1e-4)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.skipif(not TANZANIA.is_file(), reason="sample_tiles/tanzania missing")
def test_cli_predict_engine_option(exported_checkpoint, tmp_path) -> None:
    from rsseg.cli.main import main as cli

    src = _tanzania_crop(tmp_path / "crop.tif", size=300)
    runner = CliRunner()
    outs = {}
    for engine in ("onnx", "torch"):
        res = runner.invoke(cli, ["predict", str(src), "-m", str(exported_checkpoint), "-o", str(tmp_path / f"{engine}.tif"),
                                  "--engine", engine, "--device", "cpu"])
        assert res.exit_code == 0, res.output
        assert f"engine {engine}" in res.output
        outs[engine] = rasterio.open(tmp_path / f"{engine}.tif").read(1)
    assert (outs["onnx"] != outs["torch"]).mean() < 0.001
    res = runner.invoke(cli, ["predict", str(src), "-m", str(exported_checkpoint), "-o", str(tmp_path / "x.tif"),
                              "--engine", "onnx", "--device", "cuda"])
    assert res.exit_code == 2 and ("runs on the CPU" in res.output or "no CUDA" in res.output)


@pytest.mark.slow
@pytest.mark.skipif(not TANZANIA.is_file(), reason="sample_tiles/tanzania missing")
def test_onnx_predict_never_imports_torch(exported_checkpoint, tmp_path) -> None:
    """With a cached export, `rsseg predict` (every product) runs without importing torch: a CUDA
    build of torch alone is ~700 MB of RSS (the ONNX path's memory goal)."""
    src = _tanzania_crop(tmp_path / "crop.tif", size=300)
    code = ("import sys\nfrom rsseg.cli.main import main\ntry:\n    main()\nexcept SystemExit as exc:\n"
            "    assert not exc.code, exc.code\nprint('torch imported:', 'torch' in sys.modules)\n")
    # the checkpoint with its cached export, and the exported .onnx file alone (default engine and device)
    model = shutil.copyfile(cached_onnx(exported_checkpoint), tmp_path / "model.onnx")
    env = {k: v for k, v in os.environ.items() if k != "RSSEG_ENGINE"}
    for name, args in (("ckpt", [str(exported_checkpoint), "--engine", "auto", "--device", "cpu"]), ("onnx", [str(model)])):
        out = tmp_path / name
        res = subprocess.run(
            [sys.executable, "-c", code, "predict", str(src), "-o", f"{out}.tif", "--vector", f"{out}.gpkg",
             "--report", f"{out}.json", "--confidence", f"{out}.conf.tif", "-m", *args],
            capture_output=True, text=True, timeout=1500, env=env)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        assert "engine onnx" in res.stdout and "torch imported: False" in res.stdout
        assert all(Path(f"{out}{ext}").is_file() for ext in (".tif", ".gpkg", ".json", ".conf.tif"))


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.skipif(not TANZANIA.is_file(), reason="sample_tiles/tanzania missing")
def test_predict_from_the_exported_onnx_equals_the_checkpoint(exported_checkpoint, tmp_path) -> None:
    """`rsseg predict scene.tif -m model.onnx -o classes.tif --vector b.gpkg --report r.json` writes what
    the checkpoint gives. model.onnx is what `rsseg export` writes (export_checkpoint_onnx at the default
    size, the export the cache holds too), used on its own, with no checkpoint beside it."""
    import geopandas as gpd

    from rsseg.cli.main import main as cli

    models = tmp_path / "models"
    models.mkdir()
    model = shutil.copyfile(cached_onnx(exported_checkpoint), models / "model.onnx")
    src = _tanzania_crop(tmp_path / "crop.tif", size=400)
    runs = {}
    for name, path in (("checkpoint", exported_checkpoint), ("onnx", model)):
        d = tmp_path / name
        d.mkdir()
        res = CliRunner().invoke(cli, ["predict", str(src), "-m", str(path), "-o", str(d / "classes.tif"), "--vector",
                                       str(d / "b.gpkg"), "--report", str(d / "r.json"), "--confidence",
                                       str(d / "conf.tif"), "--engine", "auto"])
        assert res.exit_code == 0, res.output
        assert "engine onnx, device cpu" in res.output
        runs[name] = d
    a, b = runs["checkpoint"], runs["onnx"]
    for raster in ("classes.tif", "conf.tif"):
        with rasterio.open(a / raster) as x, rasterio.open(b / raster) as y:
            assert np.array_equal(x.read(), y.read()) and x.profile == y.profile and x.tags() == y.tags()
    with rasterio.open(a / "classes.tif") as x:
        assert len(np.unique(x.read(1))) > 1  # a real map, not one class
    pa, pb = gpd.read_file(a / "b.gpkg", layer="b"), gpd.read_file(b / "b.gpkg", layer="b")
    assert len(pa) > 0 and pa.drop(columns="geometry").equals(pb.drop(columns="geometry"))
    assert pa.geometry.geom_equals_exact(pb.geometry, tolerance=0).all() and pa.crs == pb.crs
    ra, rb = (json.loads((d / "r.json").read_text()) for d in (a, b))
    for key in ("classes", "valid_pixels", "nodata_pixels", "total_area_m2"):
        assert ra[key] == rb[key], key
