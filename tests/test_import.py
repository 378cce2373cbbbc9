"""`rsseg import`: GeoSeg UNetFormer checkpoints become rsseg checkpoints with identical logits.

The GeoSeg checkpoints are made here from known rsseg models by the inverse renaming (written
independently of the importer's rules from GeoSeg's module layout), wrapped as GeoSeg's
Lightning module saves them: the model under ``net.``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from conftest import write_raster

from rsseg.checkpoint import load_model, read_meta
from rsseg.cli.main import main
from rsseg.config import ModelConfig
from rsseg.data.normalize import IMAGENET_MEAN, IMAGENET_STD
from rsseg.models import build_model
from rsseg.models.attention import relative_position_index

# rsseg name -> GeoSeg name (GeoSeg wraps plain convs in a Sequential "Conv", names the MLP layers
# fc1/fc2, the FRH gates pa/ca, and keeps the heads inside its decoder)
INVERSE = (
    (r"encoder\.(.+)", r"backbone.\1"),
    (r"decoder\.(b\d)\.attn\.qkv\.weight", r"decoder.\1.attn.qkv.0.weight"),
    (r"decoder\.(b\d)\.mlp\.0\.(.+)", r"decoder.\1.mlp.fc1.\2"),
    (r"decoder\.(b\d)\.mlp\.2\.(.+)", r"decoder.\1.mlp.fc2.\2"),
    (r"decoder\.(p\d)\.pre_conv\.weight", r"decoder.\1.pre_conv.0.weight"),
    (r"decoder\.p1\.spatial\.(.+)", r"decoder.p1.pa.\1"),
    (r"decoder\.p1\.channel\.(\d)\.weight", r"decoder.p1.ca.\1.0.weight"),
    (r"head\.feature\.(.+)", r"decoder.segmentation_head.0.\1"),
    (r"head\.classifier\.weight", r"decoder.segmentation_head.2.0.weight"),
    (r"aux_head\.0\.(.+)", r"decoder.aux_head.conv.\1"),
    (r"aux_head\.2\.weight", r"decoder.aux_head.conv_out.0.weight"),
    (r"(decoder\..+)", r"\1"),
)


def to_geoseg(model: torch.nn.Module, window: int = 8) -> dict[str, torch.Tensor]:
    """GeoSeg's state dict for an rsseg UNetFormer (no projection; persistent position indices)."""
    out = {}
    for key, value in model.state_dict().items():
        if key == "projection.weight":
            continue
        name = next(re.sub(p, r, key) for p, r in INVERSE if re.fullmatch(p, key))
        out[name] = value.clone()
    for block in ("b2", "b3", "b4"):
        out[f"decoder.{block}.attn.relative_position_index"] = relative_position_index(window)
    return out


def lightning_ckpt(state: dict[str, torch.Tensor]) -> dict:
    return {"epoch": 104, "global_step": 1, "pytorch-lightning_version": "1.5.9",
            "state_dict": {f"net.{k}": v for k, v in state.items()}}


def known_model(num_classes: int, encoder: str = "resnet18") -> torch.nn.Module:
    """A random rsseg model with non-trivial BatchNorm statistics and an identity projection."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder=encoder), num_classes=num_classes, in_channels=3)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    with torch.no_grad():
        model.projection.weight.copy_(torch.eye(64).reshape(64, 64, 1, 1))
    return model.eval()


def run(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def geoseg6(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    model = known_model(6)
    path = tmp_path_factory.mktemp("geoseg") / "unetformer-r18-potsdam.ckpt"
    torch.save(lightning_ckpt(to_geoseg(model)), path)
    return path, model


def test_potsdam_checkpoint_round_trips_to_identical_logits(geoseg6, tmp_path):
    src, reference = geoseg6
    out = tmp_path / "potsdam.ckpt"
    res = run("import", str(src), "--dataset", "potsdam", "-o", str(out))
    assert res.exit_code == 0, res.output
    model, meta = load_model(out)
    for shape in ((1, 3, 64, 64), (2, 3, 70, 90)):
        x = torch.randn(*shape)
        with torch.inference_mode():
            assert torch.equal(model(x), reference(x))
    # identity projection: the FRH feature reaches the classifier unchanged under either contract
    assert torch.equal(model.projection.weight.flatten(1), torch.eye(64))
    assert model.aux_head is not None and torch.equal(model.aux_head[2].weight, reference.aux_head[2].weight)
    assert meta.classes[0] == "impervious surfaces" and meta.classes[-1] == "clutter"
    assert meta.bands == ["red", "green", "blue"] and meta.gsd == 0.05 and meta.patch_size == 1024
    assert meta.mean == list(IMAGENET_MEAN) and meta.std == list(IMAGENET_STD) and meta.scale == 255.0
    assert meta.config["model"]["encoder"] == "resnet18" and meta.config["model"]["window_size"] == 8
    assert "6 classes" in res.output


def test_bare_state_dict_and_other_encoders_and_datasets(tmp_path):
    model = known_model(8, encoder="resnet34")
    src = tmp_path / "uavid.pth"
    torch.save({f"module.{k}": v for k, v in to_geoseg(model).items()}, src)  # DataParallel-style bare dict
    out = tmp_path / "uavid.ckpt"
    res = run("import", str(src), "--dataset", "uavid", "-o", str(out))
    assert res.exit_code == 0, res.output
    imported, meta = load_model(out)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(imported(x), model(x))
    assert meta.config["model"]["encoder"] == "resnet34" and meta.classes[-1] == "clutter" and len(meta.colors) == 8
    assert meta.config["dataset"]["name"] == "folder" and meta.gsd is None


def _refused(res, *fragments: str) -> None:
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert line.startswith("error:") and "\n" not in line, line
    for fragment in fragments:
        assert fragment in line, line


def test_refuses_checkpoints_that_do_not_fit(geoseg6, tmp_path):
    src, reference = geoseg6
    out = tmp_path / "o.ckpt"
    state = to_geoseg(reference)

    def refused(bad: dict, *fragments: str, args: tuple[str, ...] = ("--dataset", "potsdam")) -> None:
        path = tmp_path / "bad.ckpt"
        torch.save(lightning_ckpt(bad), path)
        _refused(run("import", str(path), *args, "-o", str(out)), *fragments)
        assert not out.exists()

    # another architecture (a tensor UNetFormer does not have)
    refused({**state, "decoder.fpn.0.weight": torch.zeros(64, 64, 1, 1)}, "no counterpart", "decoder.fpn.0.weight")
    # another architecture altogether (no UNetFormer decoder)
    refused({"backbone.conv1.weight": torch.zeros(64, 3, 7, 7), "decode_head.conv_seg.weight": torch.zeros(6, 64, 1, 1)},
            "not a GeoSeg UNetFormer", "decoder.segmentation_head.2.0.weight")
    # a wrong shape in the decoder
    refused({**state, "decoder.p2.pre_conv.0.weight": torch.zeros(64, 96, 1, 1)}, "decoder.p2.pre_conv.weight", "(64, 96, 1, 1)")
    # a missing tensor
    refused({k: v for k, v in state.items() if k != "decoder.b3.mlp.fc1.bias"}, "decoder.b3.mlp.0.bias missing")
    # relative position indices are derived by rsseg: checked, not copied
    refused({**state, "decoder.b2.attn.relative_position_index": torch.zeros(64, 64, dtype=torch.long)}, "relative position index")
    # an encoder that is not the one named
    refused(state, "resnet50", args=("--dataset", "potsdam", "--encoder", "resnet50"))
    # six outputs are not LoveDA's seven classes
    refused(state, "6 classes", "loveda", args=("--dataset", "loveda"))
    # neither a dataset nor classes
    refused(state, "--dataset", args=())
    # not a checkpoint at all
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    _refused(run("import", str(junk), "--dataset", "potsdam", "-o", str(out)), "cannot read GeoSeg checkpoint")
    # an existing output is never replaced without --overwrite
    out.write_bytes(b"keep")
    _refused(run("import", str(src), "--dataset", "potsdam", "-o", str(out)), "--overwrite")
    assert out.read_bytes() == b"keep"


@pytest.fixture(scope="module")
def imported2(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A two-class (background, building) GeoSeg checkpoint imported with explicit classes."""
    model = known_model(2)
    tmp = tmp_path_factory.mktemp("imp2")
    torch.save(lightning_ckpt(to_geoseg(model)), tmp / "geoseg.ckpt")
    res = run("import", str(tmp / "geoseg.ckpt"), "--classes", "background,building", "--colors", "#000000,#ff0000",
              "--gsd", "0.1", "-o", str(tmp / "imported.ckpt"))
    assert res.exit_code == 0, res.output
    return tmp / "imported.ckpt", model


def test_imported_checkpoint_predicts_and_evaluates(imported2, sample_tiles, tmp_path):
    ckpt, _ = imported2
    image = sample_tiles / "tanzania" / "image.tif"
    out = tmp_path / "classes.tif"
    res = run("predict", str(image), "-m", str(ckpt), "-o", str(out), "--tile", "512", "--overlap", "64")
    assert res.exit_code == 0, res.output
    with rasterio.open(out) as dst, rasterio.open(image) as src:
        assert (dst.crs, dst.transform, dst.shape) == (src.crs, src.transform, src.shape)
        assert set(np.unique(dst.read(1))) <= {0, 1}
    res = run("evaluate", "-m", str(ckpt), "--root", str(sample_tiles), "--split", "val", "--tile", "256",
              "--overlap", "32", "-o", str(tmp_path / "rep"))
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["classes"] == ["background", "building"] and sum(map(sum, rep["confusion_matrix"])) > 0


@pytest.mark.slow
def test_imported_checkpoint_exports_to_onnx(imported2, tmp_path):
    import onnxruntime as ort

    from rsseg.checkpoint import export_checkpoint_onnx

    ckpt, reference = imported2
    out, meta = export_checkpoint_onnx(ckpt, tmp_path / "m.onnx", size=64, dynamic=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        expected = reference(x).numpy()
    got = ort.InferenceSession(str(out)).run(None, {"image": x.numpy()})[0]
    assert np.abs(got - expected).max() < 1e-4 and meta.gsd == 0.1


@pytest.mark.slow
def test_fine_tunes_from_imported_weights_with_a_regularizer(imported2, sample_tiles, tmp_path, monkeypatch):
    monkeypatch.setenv("RSSEG_CACHE_DIR", str(tmp_path / "cache"))
    ckpt, _ = imported2
    small = ["optim.batch_size=8", "optim.crop_size=128", "optim.max_epochs=1", "optim.lr=1e-4"]
    res = run("train", "--dataset", "folder", "--root", str(sample_tiles), "-r", "in2nect", "--init-from", str(ckpt),
              "-o", str(tmp_path / "run"), *small)
    assert res.exit_code == 0, res.output
    tuned, meta = load_model(tmp_path / "run" / "last.ckpt")
    start, _ = load_model(ckpt)
    assert meta.config["loss"]["regularizers"]["in2nect"]["enabled"]
    # started from the imported weights (the encoder stem moved only a little), not from scratch
    w0, w1 = start.encoder.conv1.weight, tuned.encoder.conv1.weight
    assert not torch.equal(w0, w1) and (w1 - w0).norm() < 0.1 * w0.norm()


def test_init_from_refuses_other_classes(imported2, sample_tiles, tmp_path, monkeypatch):
    monkeypatch.setenv("RSSEG_CACHE_DIR", str(tmp_path / "cache"))
    ckpt, _ = imported2
    res = run("train", "--dataset", "folder", "--root", str(sample_tiles), "--init-from", str(ckpt),
              "dataset.classes=[a,b]", "dataset.colors=['#000000','#ffffff']", "-o", str(tmp_path / "run"))
    _refused(res, "classes", "--init-from")
    assert read_meta(ckpt).classes == ["background", "building"]


# -- an input contract in every imported model; corrupt weights refused ----------------------------------
def test_imported_checkpoint_records_geosegs_input_and_refuses_other_ranges(imported2, sample_tiles, tmp_path):
    ckpt, _ = imported2
    meta = read_meta(ckpt)
    assert meta.input_dtype == "uint8" and meta.input_range == [[0.0, 255.0]] * 3
    with rasterio.open(sample_tiles / "tanzania" / "image.tif") as src:
        data = src.read(window=rasterio.windows.Window(0, 0, 128, 128))
    u16 = write_raster(tmp_path / "u16.tif", data.astype(np.uint16) * 257)
    res = run("predict", str(u16), "-m", str(ckpt), "-o", str(tmp_path / "o.tif"))
    _refused(res, "training range", "uint16", "--scale 1/")
    assert not (tmp_path / "o.tif").exists()


def test_import_calibrate_measures_a_sample_of_the_training_imagery(sample_tiles, tmp_path):
    src = tmp_path / "geoseg.ckpt"
    torch.save(lightning_ckpt(to_geoseg(known_model(2))), src)
    image = sample_tiles / "tanzania" / "image.tif"
    out = tmp_path / "calibrated.ckpt"
    res = run("import", str(src), "--classes", "background,building", "--colors", "#000000,#ff0000",
              "--calibrate", str(image), "-o", str(out))
    assert res.exit_code == 0, res.output
    meta = read_meta(out)
    with rasterio.open(image) as s:
        assert meta.input_dtype == s.dtypes[0] == "uint8"
    assert len(meta.input_range) == 3 and all(0 <= lo < hi <= 255 for lo, hi in meta.input_range)
    assert f"measured on {image}" in res.output
    # GeoSeg divides by 255: a 16-bit sample cannot be what its weights were trained on
    with rasterio.open(image) as s:
        u16 = write_raster(tmp_path / "u16.tif", s.read().astype(np.uint16) * 257)
    _refused(run("import", str(src), "--classes", "background,building", "--colors", "#000000,#ff0000",
                 "--calibrate", str(u16), "-o", str(tmp_path / "x.ckpt")), "--calibrate", "p99")
    assert not (tmp_path / "x.ckpt").exists()


class _Code:
    """A pickled object that would run code if unpickled without weights_only."""

    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize("spoil", ["nan", "inf", "negative_variance", "pickle"])
def test_import_refuses_corrupt_weights_and_pickled_code(geoseg6, tmp_path, spoil, capfd):
    _, reference = geoseg6
    state = to_geoseg(reference)
    if spoil == "pickle":
        ckpt = {**lightning_ckpt(state), "hyper_parameters": {"loss": _Code()}}
        says = ("could run code", "ask its publisher", "safetensors")
    else:
        name = "decoder.p2.pre_conv.0.weight" if spoil != "negative_variance" else "backbone.bn1.running_var"
        state[name] = state[name].clone()
        state[name].view(-1)[3] = {"nan": float("nan"), "inf": float("inf"), "negative_variance": -1.0}[spoil]
        ckpt = lightning_ckpt(state)
        says = ("is corrupt", name)
    path = tmp_path / "bad.ckpt"
    torch.save(ckpt, path)
    out = tmp_path / "o.ckpt"
    res = run("import", str(path), "--dataset", "potsdam", "-o", str(out))
    _refused(res, *says)
    assert "torch.load" not in res.output and "weights_only=False" not in res.output
    assert "pwned" not in capfd.readouterr().out and not out.exists()


def test_import_reads_safetensors_weights(geoseg6, tmp_path):
    from safetensors.torch import save_file

    _, reference = geoseg6
    src = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in to_geoseg(reference).items()}, str(src))
    out = tmp_path / "o.ckpt"
    res = run("import", str(src), "--dataset", "potsdam", "-o", str(out))
    assert res.exit_code == 0, res.output
    model, _ = load_model(out)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(model(x), reference(x))


@pytest.mark.parametrize("gsd", ["nan", "inf", "-1"])
def test_import_refuses_a_gsd_that_is_not_a_positive_finite_number(tmp_path, gsd):
    src = tmp_path / "w.pth"
    src.write_bytes(b"not read: the option is refused first")
    res = CliRunner().invoke(main, ["import", str(src), "--gsd", gsd, "-o", str(tmp_path / "o.ckpt")])
    assert res.exit_code == 2 and "--gsd" in res.output and res.output.count("error:") == 1, res.output
    assert not (tmp_path / "o.ckpt").exists()
