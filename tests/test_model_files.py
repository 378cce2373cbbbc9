"""Model files: one self-describing ``.onnx`` (``rsseg export``) carrying the checkpoint's metadata
and, derived from it, the STAC MLM fields; read by ``read_meta`` without torch and taken wherever a
checkpoint is (predict, the viewer; evaluate -m and the refusals are in test_refusals_predict.py).

The ONNX graphs here are one 1x1 convolution (:func:`conftest.write_onnx_model`): what these
tests check is the file's metadata and the paths around the graph, not the minute-long UNetFormer
export (test_engines.py runs that one)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from click.testing import CliRunner
from conftest import run_without_torch, uint8_contract, write_onnx_model, write_raster

import rsseg
from rsseg.checkpoint import (
    META_KEY,
    MLM_KEY,
    ModelMeta,
    mlm_item,
    mlm_name,
    mlm_properties,
    read_meta,
    save_model,
)
from rsseg.cli.main import main
from rsseg.config import Config
from rsseg.data.normalize import Normalizer
from rsseg.inference.settings import fastest_file_engine
from rsseg.io import file_sha256

pytest.importorskip("onnxruntime")


def _meta(**changes) -> ModelMeta:
    cfg = Config()
    cfg.inference.tile, cfg.inference.overlap = 256, 64
    base = dict(classes=["background", "building"], colors=["#000000", "#ff3030"], bands=["red", "green", "blue"],
                mean=[0.45, 0.44, 0.40], std=[0.22, 0.20, 0.19], gsd=0.3, config=cfg.to_dict(), **uint8_contract())
    return ModelMeta(**(base | changes))


def _plain(data: object) -> object:
    """``data`` as JSON gives it back (tuples become lists): what a model file stores."""
    return json.loads(json.dumps(data))


def _scene(path: Path, size: int = 96) -> Path:
    rng = np.random.default_rng(5)  # 0.3 m pixels, as the test models were trained on
    return write_raster(path, rng.integers(0, 256, (3, size, size), dtype=np.uint8),
                        transform=Affine(0.3, 0, 500000, 0, -0.3, 100000))


def test_mlm_view_reads_back_through_pystacs_mlm_extension() -> None:
    pystac = pytest.importorskip("pystac")
    from pystac.extensions.mlm import MLMExtension, ValueScaling

    meta = _meta()
    props = mlm_properties(meta, "buildings", total_parameters=1234, framework_version="1.17.0")
    item = pystac.Item.from_dict(mlm_item(props, "buildings.onnx", created="2026-01-02T03:04:05Z"))
    assert MLMExtension.has_extension(item)
    ext = MLMExtension.ext(item)
    assert (ext.mlm_name, ext.architecture, ext.framework, ext.framework_version) == (
        "buildings", "UNetFormer", "ONNX", "1.17.0")
    assert ext.tasks == ["semantic-segmentation"] and ext.total_parameters == 1234
    assert ext.batch_size_suggestion == meta.inference_config().batch
    (model_input,) = ext.input
    assert model_input.bands == meta.bands
    assert model_input.input.shape == [-1, 3, -1, -1]
    assert model_input.input.dim_order == ["batch", "channel", "height", "width"]
    assert model_input.input.data_type == "float32"
    scaling = model_input.properties["value_scaling"]  # one object per band, as the MLM spec lists them
    assert len(scaling) == meta.in_channels
    for s in scaling:
        ValueScaling.validate_property_dict(s["type"], s)
        assert ValueScaling(s).type == "z-score"
    (output,) = ext.output
    assert output.result.shape == [-1, 2, -1, -1] and output.result.dim_order[1] == "class"
    assert [(c.value, c.name, c.color_hint) for c in output.classes] == [(0, "background", "000000"),
                                                                         (1, "building", "FF3030")]
    assert item.properties["gsd"] == 0.3
    assert props["mlm:hyperparameters"]["tile"] == 256 and props["mlm:hyperparameters"]["overlap"] == 64
    assert props["mlm:hyperparameters"]["input_range"] == meta.input_range
    assert props["mlm:pretrained"] is False and props["mlm:pretrained_source"] is None  # MLM: an explicit null
    assert (mlm_name("my model (v2)"), mlm_name("7"), mlm_name("best.ckpt")) == ("my-model-v2", "model-7", "best.ckpt")
    asset = item.assets["model"]
    assert "mlm:model" in asset.roles and asset.href == "buildings.onnx"
    assert asset.extra_fields["mlm:artifact_type"] == "onnx"


def test_mlm_value_scaling_is_rsseg_normalisation() -> None:
    """The z-score per band the MLM view states gives the very input rsseg feeds the model."""
    meta = _meta(scale=255.0)
    scaling = mlm_properties(meta, "m")["mlm:input"][0]["value_scaling"]
    raw = np.random.default_rng(0).integers(0, 256, (3, 8, 9)).astype(np.float32)
    stated = np.stack([(raw[b] - s["mean"]) / s["stddev"] for b, s in enumerate(scaling)])
    np.testing.assert_allclose(stated, Normalizer(meta.mean, meta.std, meta.scale)(raw), rtol=1e-5, atol=1e-5)


def test_read_meta_reads_an_onnx_model_without_torch(tmp_path) -> None:
    """A Dask client, the viewer and predict read an exported model's metadata with torch absent."""
    model = write_onnx_model(tmp_path / "m.onnx", {"rsseg": _meta().to_dict()})
    code = ("from rsseg.checkpoint import read_meta\n"
            "from rsseg.inference.settings import resolve_tiling\n"
            f"meta = read_meta({str(model)!r})\n"
            "assert meta.classes == ['background', 'building'] and meta.gsd == 0.3\n"
            "assert resolve_tiling(meta)[:2] == (256, 64)\n")
    proc = run_without_torch(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert read_meta(model).to_dict() == _plain(_meta().to_dict())


def test_predict_from_an_onnx_model_never_imports_torch(tmp_path) -> None:
    """Every product from a .onnx model with torch unimportable (a torch-free install behaves so)."""
    model = write_onnx_model(tmp_path / "m.onnx", {"rsseg": _meta().to_dict()})
    scene = _scene(tmp_path / "scene.tif")
    out = tmp_path / "out"
    code = "from rsseg.cli.main import main\ntry:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
    env = {k: v for k, v in os.environ.items() if k != "RSSEG_ENGINE"}  # the default engine, as a user has it
    res = run_without_torch(code, "predict", scene, "-m", model, "-o", f"{out}.tif", "--vector", f"{out}.gpkg",
                            "--report", f"{out}.json", "--confidence", f"{out}.conf.tif", "--min-area", "0",
                            timeout=600, env=env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "model: m.onnx" in res.stdout and f"engine {fastest_file_engine()}, device cpu" in res.stdout
    assert all(Path(f"{out}{ext}").is_file() for ext in (".tif", ".gpkg", ".json", ".conf.tif"))
    with rasterio.open(f"{out}.tif") as src:
        assert src.tags()["CLASS_1"] == "building"


def _tiny_checkpoint(path: Path, meta: ModelMeta) -> Path:
    """A small UNetFormer saved with ``meta`` (its config: the tiny model's)."""
    from rsseg.models import build_model

    cfg = Config()
    cfg.model.encoder, cfg.model.decode_channels, cfg.model.embed_dim, cfg.model.num_heads = \
        "mobilenetv3_small_050", 32, 16, 4
    cfg.inference.tile, cfg.inference.overlap = 256, 64
    torch.manual_seed(0)
    model = build_model(cfg.model, num_classes=meta.num_classes, in_channels=meta.in_channels)
    return save_model(path, model, dataclasses.replace(meta, config=cfg.to_dict()))


def test_export_writes_one_self_describing_file_and_a_stac_item(tmp_path, monkeypatch) -> None:
    """``rsseg export --stac``: the .onnx carries the checkpoint's metadata, its sha256, the rsseg
    version and the MLM view; the STAC item points at it; predict runs it as it is. (The graph is
    the 1x1 convolution: torch's tracer is not what this test is about.)"""
    import onnx

    from rsseg import models

    ckpt = _tiny_checkpoint(tmp_path / "best.ckpt", _meta())
    monkeypatch.setattr(models, "export_onnx", lambda model, path, in_channels, **_kw: write_onnx_model(
        Path(path), bands=in_channels, classes=2))
    out, item_path = tmp_path / "buildings.onnx", tmp_path / "buildings.json"
    res = CliRunner().invoke(main, ["export", "-m", str(ckpt), "-o", str(out), "--stac", str(item_path)])
    assert res.exit_code == 0, res.output
    assert f"rsseg predict SCENE.tif -m {out}" in res.output
    props = {p.key: json.loads(p.value) for p in onnx.load(str(out)).metadata_props}
    assert set(props) == {META_KEY, MLM_KEY}
    meta = read_meta(out)
    assert meta.checkpoint_sha256 == file_sha256(ckpt) and meta.rsseg_version == rsseg.__version__
    assert props[META_KEY] == meta.to_dict()
    assert meta.to_dict() | {"checkpoint_sha256": None, "rsseg_version": None} == _plain(read_meta(ckpt).to_dict())
    assert props[MLM_KEY]["mlm:name"] == "buildings" and props[MLM_KEY]["mlm:total_parameters"] > 10_000
    assert props[MLM_KEY] == _plain(mlm_properties(meta, "buildings", framework_version=onnx.__version__,
                                                   total_parameters=props[MLM_KEY]["mlm:total_parameters"]))
    item = json.loads(item_path.read_text())
    assert item["assets"]["model"]["href"] == "buildings.onnx"
    assert {k: v for k, v in item["properties"].items() if k != "datetime"} == props[MLM_KEY]
    # the file alone predicts: no checkpoint beside it
    ckpt.unlink()
    scene = _scene(tmp_path / "scene.tif")
    res = CliRunner().invoke(main, ["predict", str(scene), "-m", str(out), "-o", str(tmp_path / "c.tif"), "--engine", "auto"])
    assert res.exit_code == 0, res.output
    assert f"engine {fastest_file_engine()}" in res.output
    # again: outputs exist, nothing is replaced without --overwrite
    res = CliRunner().invoke(main, ["export", "-m", str(out), "-o", str(out), "--stac", str(item_path)])
    assert res.exit_code == 2 and "already exists" in res.output


def test_viewer_lists_onnx_models_but_not_cached_exports(tmp_path) -> None:
    from rsseg import viewer
    from rsseg.inference.engines import is_cached_export

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "best.ckpt").write_bytes(b"x")
    write_onnx_model(tmp_path / "buildings.onnx", {"rsseg": _meta().to_dict()})
    cached = tmp_path / "run" / "best.ckpt.0123456789abcdef0123.onnx"
    cached.write_bytes(b"x")
    assert is_cached_export(cached) and not is_cached_export(tmp_path / "buildings.onnx")
    assert viewer.list_files(tmp_path, viewer.CHECKPOINT_SUFFIXES) == ["buildings.onnx", "run/best.ckpt"]


def test_viewer_predicts_with_an_onnx_model(tmp_path) -> None:
    from rsseg.errors import ConfigError
    from rsseg.viewer.session import prediction_settings, run_prediction

    model = write_onnx_model(tmp_path / "m.onnx", {"rsseg": _meta().to_dict()})
    scene = _scene(tmp_path / "scene.tif")
    assert (prediction_settings(model).tile, prediction_settings(model).overlap) == (256, 64)

    def no_torch_loader(path: str):
        raise AssertionError(f"the torch loader ran for {path}")

    pred = run_prediction(scene, model, tmp_path / "cache", engine="auto", loader=no_torch_loader)
    assert pred.classes == ["background", "building"] and pred.classes_tif.is_file()
    with pytest.raises(ConfigError, match="runs in ONNX Runtime or OpenVINO, not with the torch engine"):
        run_prediction(scene, model, tmp_path / "cache2", engine="torch", loader=no_torch_loader)
