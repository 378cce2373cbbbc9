"""The command line as a user meets it: help, stats, predict, evaluate, errors in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from conftest import uint8_contract

from rsseg.checkpoint import ModelMeta, save_model
from rsseg.cli.main import COMMANDS, main
from rsseg.config import Config, ModelConfig
from rsseg.models import build_model


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_help_lists_every_command_and_each_has_help():
    res = run("--help")
    assert res.exit_code == 0
    for name in COMMANDS:
        assert name in res.output
        sub = run(name, "--help")
        assert sub.exit_code == 0 and "Usage:" in sub.output, name


def test_stats_matches_numpy_on_the_sample_tiles(sample_tiles, tmp_path, monkeypatch):
    monkeypatch.setenv("RSSEG_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "stats.json"
    res = run("stats", "--root", str(sample_tiles), "-o", str(out))
    assert res.exit_code == 0, res.output
    stats = json.loads(out.read_text())
    pixels, regions = np.zeros(2, np.int64), np.zeros(2, np.int64)
    band_sum = np.zeros(3)
    n = 0
    for mask_path in sorted((sample_tiles / "train" / "masks").glob("*.tif")):
        with rasterio.open(mask_path) as m, rasterio.open(sample_tiles / "train" / "images" / mask_path.name) as im:
            mask = m.read(1)
            img = im.read().reshape(3, -1) / 255.0
        counts = np.bincount(mask.ravel(), minlength=2)
        pixels += counts
        regions += counts > 0
        band_sum += img.sum(1)
        n += img.shape[1]
    assert stats["pixel_counts"] == pixels.tolist()
    assert stats["region_counts"] == regions.tolist()
    assert stats["pixel_imbalance"] == pytest.approx(pixels.max() / pixels.min())
    assert stats["mean"] == pytest.approx((band_sum / n).tolist(), abs=1e-9)
    assert "building" in res.output and "imbalance" in res.output


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch_model = build_model(ModelConfig(), num_classes=2, in_channels=3).eval()
    meta = ModelMeta(
        classes=["background", "building"], colors=["#000000", "#ff0000"], bands=["red", "green", "blue"],
        mean=[0.6, 0.5, 0.4], std=[0.25, 0.2, 0.2], config=Config().to_dict(), **uint8_contract(),
    )
    return save_model(tmp_path_factory.mktemp("ckpt") / "m.ckpt", torch_model, meta)


def test_predict_then_evaluate_on_the_tanzania_crop(checkpoint, sample_tiles, tmp_path):
    image, mask = sample_tiles / "tanzania" / "image.tif", sample_tiles / "tanzania" / "mask.tif"
    out, gpkg, report = tmp_path / "classes.tif", tmp_path / "classes.gpkg", tmp_path / "areas.json"
    res = run("predict", str(image), "-m", str(checkpoint), "-o", str(out), "--vector", str(gpkg),
              "--report", str(report), "--reference", str(mask), "--tile", "512", "--overlap", "64")
    assert res.exit_code == 0, res.output
    with rasterio.open(out) as dst, rasterio.open(image) as src:
        assert (dst.crs, dst.transform, dst.width, dst.height) == (src.crs, src.transform, src.width, src.height)
        assert dst.dtypes[0] == "uint8" and dst.overviews(1)
    assert gpkg.is_file() and json.loads(report.read_text())
    res = run("evaluate", str(out), str(mask), "-o", str(tmp_path / "rep"))
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["classes"] == ["background", "building"]
    assert sum(map(sum, rep["confusion_matrix"])) == 1024 * 1024

    before = out.read_bytes()
    res = run("predict", str(image), "-m", str(checkpoint), "-o", str(out))
    assert res.exit_code == 2 and res.output.startswith("error:") and "--overwrite" in res.output
    assert out.read_bytes() == before  # refused, and the existing output is untouched


def test_predict_buffer_mb_streams_column_strips_to_the_same_classes(checkpoint, sample_tiles, tmp_path):
    image = sample_tiles / "tanzania" / "image.tif"
    for name, extra in (("rows", ()), ("strips", ("--buffer-mb", "4"))):  # 4 MB: two strips of 512 columns
        res = run("predict", str(image), "-m", str(checkpoint), "-o", str(tmp_path / f"{name}.tif"), "--tile", "256",
                  "--overlap", "32", "--engine", "torch", *extra)
        assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "rows.tif") as a, rasterio.open(tmp_path / "strips.tif") as b:
        assert np.array_equal(a.read(1), b.read(1))
    res = run("predict", str(image), "-m", str(checkpoint), "-o", str(tmp_path / "o.tif"), "--buffer-mb", "0")
    assert res.exit_code == 2 and "--buffer-mb" in res.output and not (tmp_path / "o.tif").exists()


def test_evaluate_refuses_rasters_on_different_grids(sample_tiles, tmp_path):
    chip = next((sample_tiles / "val" / "masks").glob("*.tif"))
    res = run("evaluate", str(chip), str(sample_tiles / "tanzania" / "mask.tif"), "--classes", "background,building",
              "-o", str(tmp_path / "r"))
    assert res.exit_code == 2 and "same grid" in res.output
    assert not (tmp_path / "r").exists()


def test_bad_checkpoint_is_one_clean_line(tmp_path, sample_tiles):
    fake = tmp_path / "fake.ckpt"
    fake.write_bytes(b"not a checkpoint")
    res = run("predict", str(sample_tiles / "tanzania" / "image.tif"), "-m", str(fake), "-o", str(tmp_path / "o.tif"))
    assert res.exit_code == 2 and res.output.startswith("error: cannot read checkpoint")
    assert not (tmp_path / "o.tif").exists()


def test_onnx_export_carries_the_metadata(checkpoint, tmp_path):
    import onnx
    import onnxruntime as ort
    import torch

    from rsseg.checkpoint import export_checkpoint_onnx, load_model

    out, meta = export_checkpoint_onnx(checkpoint, tmp_path / "m.onnx", size=64, dynamic=False)
    props = {p.key: json.loads(p.value) for p in onnx.load(str(out)).metadata_props}
    assert props["rsseg"]["classes"] == ["background", "building"] and props["rsseg"]["mean"] == [0.6, 0.5, 0.4]
    x = torch.randn(1, 3, 64, 64)
    model, _ = load_model(checkpoint)
    with torch.inference_mode():
        expected = model(x).numpy()
    got = ort.InferenceSession(str(out)).run(None, {"image": x.numpy()})[0]
    assert np.abs(got - expected).max() < 1e-4


def _crop(src: Path, dst: Path, size: int = 96, **changes) -> np.ndarray:
    """Write the top-left ``size`` x ``size`` pixels of ``src`` to ``dst`` (profile amended by ``changes``)."""
    from rasterio.windows import Window

    with rasterio.open(src) as s:
        win = Window(0, 0, size, size)
        data = s.read(window=win)
        profile = s.profile | {"width": size, "height": size, "transform": s.window_transform(win)} | changes
    with rasterio.open(dst, "w", **profile) as d:
        d.write(data)
    return data


def test_predict_reference_and_evaluate_share_one_validation(checkpoint, sample_tiles, tmp_path):
    image, mask = tmp_path / "image.tif", tmp_path / "mask.tif"
    _crop(sample_tiles / "tanzania" / "image.tif", image)
    labels = _crop(sample_tiles / "tanzania" / "mask.tif", mask, nodata=None)
    bad = labels.copy()
    bad[0, 0, :3] = 6  # 2 classes: 6 is neither a class nor the ignore value 255
    with rasterio.open(mask) as m:
        profile = m.profile
    with rasterio.open(tmp_path / "bad.tif", "w", **profile) as d:
        d.write(bad)
    out = tmp_path / "classes.tif"
    res = run("predict", str(image), "-m", str(checkpoint), "-o", str(out), "--reference", str(tmp_path / "bad.tif"),
              "--report", str(tmp_path / "r.json"), "--tile", "64", "--overlap", "16")
    assert res.exit_code == 2 and "values [6] outside the 2 classes" in res.output, res.output
    assert not out.exists() and not (tmp_path / "r.json").exists()

    res = run("predict", str(image), "-m", str(checkpoint), "-o", str(out), "--reference", str(mask),
              "--report", str(tmp_path / "r.json"), "--tile", "64", "--overlap", "16")
    assert res.exit_code == 0, res.output
    predicted = json.loads((tmp_path / "r.json").read_text())["metrics"]
    res = run("evaluate", str(out), str(mask), "-o", str(tmp_path / "rep"))
    assert res.exit_code == 0, res.output
    evaluated = json.loads((tmp_path / "rep" / "report.json").read_text())
    for key in ("OA", "mIoU", "mF1", "per_class", "confusion_matrix", "classes", "objects"):  # one set of keys, same numbers
        assert predicted[key] == evaluated[key], key

    res = run("evaluate", str(out), str(tmp_path / "bad.tif"), "-o", str(tmp_path / "rep2"))
    assert res.exit_code == 2 and "values [6] outside the 2 classes" in res.output
    res = run("evaluate", str(tmp_path / "bad.tif"), str(mask), "--classes", "background,building", "-o", str(tmp_path / "rep2"))
    assert res.exit_code == 2 and "class ids [6] but only 2 classes" in res.output
    res = run("evaluate", str(out), str(mask), "--classes", "a,b,c", "-o", str(tmp_path / "rep2"))
    assert res.exit_code == 2 and "--classes names 3 classes" in res.output
    _crop(sample_tiles / "tanzania" / "mask.tif", tmp_path / "utm.tif", crs="EPSG:32737")
    res = run("evaluate", str(out), str(tmp_path / "utm.tif"), "-o", str(tmp_path / "rep2"))
    assert res.exit_code == 2 and "CRS differ" in res.output
    assert not (tmp_path / "rep2").exists()


def test_unknown_vector_format_is_refused_before_the_model_loads(tmp_path, sample_tiles):
    fake = tmp_path / "fake.ckpt"
    fake.write_bytes(b"not a checkpoint")  # would fail to load: the vector check must come first
    res = run("predict", str(sample_tiles / "tanzania" / "image.tif"), "-m", str(fake), "-o", str(tmp_path / "o.tif"),
              "--vector", str(tmp_path / "v.xyz"))
    assert res.exit_code == 2 and ".xyz" in res.output and "cannot read checkpoint" not in res.output, res.output
