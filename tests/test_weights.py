"""Encoder weights by name, offline: fake weight files in the libraries' own cache layouts
(torch.hub's ``$TORCH_HOME/hub/checkpoints`` for TorchGeo, a Hugging Face hub snapshot for timm)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
import timm
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from rsseg.cli.main import main
from rsseg.config import ModelConfig
from rsseg.errors import ConfigError, RsSegError
from rsseg.models import build_model
from rsseg.models import weights as W
from rsseg.runconfig import training_config
from tests.conftest import make_folder

RGB_MOCO = "torchgeo:ResNet18_Weights.SENTINEL2_RGB_MOCO"
ALL_MOCO = "torchgeo:ResNet18_Weights.SENTINEL2_ALL_MOCO"
RGB = ["red", "green", "blue"]


def _state(in_chans: int = 3, value: float = 0.25) -> dict[str, torch.Tensor]:
    """A full timm resnet18 state dict (classifier included, as published) with recognisable values."""
    state = timm.create_model("resnet18", in_chans=in_chans).state_dict()
    return {k: torch.full_like(v, value) if v.is_floating_point() else v for k, v in state.items()}


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network, empty caches under tmp_path: every download attempt fails as it would offline."""
    import huggingface_hub.constants as hf

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(W, "_reachable", lambda host, timeout=3.0: False)
    return tmp_path


def _cache_torchgeo(name: str, state: dict[str, torch.Tensor]) -> Path:
    path = W.torchgeo_cache_path(W._torchgeo_member(name.removeprefix(W.TORCHGEO_PREFIX)).url)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def _cache_timm(root: Path, repo_id: str, state: dict[str, torch.Tensor]) -> None:
    # huggingface_hub's cache: models--<org>--<name>/refs/main -> snapshots/<commit>/<file>
    repo = root / "hf" / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file(state, str(repo / "snapshots" / commit / "model.safetensors"))


def test_names_resolve_to_library_metadata() -> None:
    info = W.describe("timm:resnet18.a1_in1k")
    assert (info.source, info.model, info.in_chans, info.license) == ("timm", "resnet18", 3, "apache-2.0")
    assert info.imagenet_normalized
    assert W.describe("timm:resnet18").model == "resnet18"  # timm's default tag
    info = W.describe(ALL_MOCO)
    assert (info.source, info.model, info.in_chans, len(info.bands)) == ("torchgeo", "resnet18", 13, 13)
    assert info.mean == (0.0,) and info.std == (10000.0,) and not info.imagenet_normalized
    assert W.describe("weights/encoder.pth").source == "file"
    assert W.encoder_weights_name("resnet18", True, None) == "timm:resnet18"
    assert W.encoder_weights_name("resnet18", True, RGB_MOCO) == RGB_MOCO
    assert W.encoder_weights_name("resnet18", False, None) is None


@pytest.mark.parametrize("name, fragment", [
    ("timm:resnet18.no_such_tag", "no pretrained weights"),
    ("torchgeo:NoSuch_Weights.X", "no weights enum"),
    ("torchgeo:ResNet18_Weights.NO_SUCH", "no member"),
])
def test_unknown_names_are_refused(name: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        W.describe(name)


def test_band_and_architecture_checks_follow_the_metadata(caplog) -> None:
    with pytest.raises(ConfigError, match="take 13 bands .* dataset has 3") as exc:
        W.check_fit(W.describe(ALL_MOCO), "resnet18", RGB, "stats")
    assert "\n" not in str(exc.value) and "--bands 3" in str(exc.value)
    with pytest.raises(ConfigError, match="model.encoder=resnet50"):
        W.check_fit(W.describe("timm:resnet50.a1_in1k"), "resnet18", RGB, "imagenet")
    with caplog.at_level(logging.WARNING, logger=W.__name__):
        W.check_fit(W.describe("timm:resnet18.a1_in1k"), "resnet18", [*RGB, "nir"], "imagenet")
        assert "first convolution is adapted" in caplog.text
        caplog.clear()
        W.check_fit(W.describe(RGB_MOCO), "resnet18", RGB, "imagenet")  # Sentinel-2 reflectance / 10000
        assert "not ImageNet's" in caplog.text
        caplog.clear()
        W.check_fit(W.describe(RGB_MOCO), "resnet18", RGB, "stats")
        assert not caplog.text


def test_torchgeo_weights_load_from_torch_hub_cache(offline) -> None:
    _cache_torchgeo(RGB_MOCO, _state(value=0.25))
    model = build_model(ModelConfig(weights=RGB_MOCO), num_classes=3, in_channels=4)
    conv1 = model.encoder.state_dict()["conv1.weight"]
    assert conv1.shape[1] == 4  # RGB filters adapted to 4 bands
    assert torch.all(model.encoder.state_dict()["layer4.1.conv2.weight"] == 0.25)
    with pytest.raises(RsSegError, match="model.encoder=resnet18"):
        build_model(ModelConfig(encoder="resnet34", weights=RGB_MOCO), num_classes=3, in_channels=3)


def test_timm_weights_load_from_hugging_face_cache(offline) -> None:
    _cache_timm(offline, "timm/resnet18.a1_in1k", _state(value=0.5))
    model = build_model(ModelConfig(pretrained=True), num_classes=3, in_channels=3)
    assert torch.all(model.encoder.state_dict()["layer1.0.conv1.weight"] == 0.5)
    model = build_model(ModelConfig(weights="timm:resnet18.a1_in1k"), num_classes=3, in_channels=3)
    assert torch.all(model.encoder.state_dict()["layer1.0.conv1.weight"] == 0.5)


def test_download_failures_are_one_line_naming_both_ways_on(offline, monkeypatch) -> None:
    for name in ("timm:resnet18", RGB_MOCO):
        with pytest.raises(W.WeightsDownloadError) as exc:
            W.load_state_dict(name)
        text = str(exc.value)
        assert "\n" not in text and "model.pretrained=false" in text and "model.weights=FILE" in text
        assert isinstance(exc.value, OSError)
    # a reachable host that fails mid-download: the library's own error is reported in one line
    import urllib.error

    import torch.hub

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("connection reset")

    monkeypatch.setattr(W, "_reachable", lambda host, timeout=3.0: True)
    monkeypatch.setattr(torch.hub, "urlopen", refuse)
    with pytest.raises(W.WeightsDownloadError, match="connection reset.*model.weights=FILE"):
        W.load_state_dict(RGB_MOCO)


def test_training_refuses_before_any_work_when_offline(offline) -> None:
    cfg = training_config(dataset="potsdam", root=str(offline / "no_data"))
    assert cfg.model.pretrained  # the papers' ImageNet start
    from rsseg.training import train

    with pytest.raises(W.WeightsDownloadError, match="model.pretrained=false or model.weights=FILE"):
        train(cfg, offline / "run", progress=False)
    assert not (offline / "run").exists()  # refused before the run directory or the data were touched
    res = CliRunner().invoke(main, ["train", "--dataset", "potsdam", "--root", str(offline / "no_data"),
                                    "-o", str(offline / "run")])
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "model.pretrained=false or model.weights=FILE" in res.stderr and not (offline / "run").exists()


def test_training_starts_from_cached_torchgeo_weights(offline) -> None:
    _cache_torchgeo(RGB_MOCO, _state())
    root = make_folder(offline / "data", n=4, size=64)
    cfg = training_config(dataset="folder", root=str(root), overrides=[
        "optim.max_epochs=1", "optim.batch_size=2", "optim.crop_size=64", f"model.weights={RGB_MOCO}",
        "model.decode_channels=16", "model.embed_dim=16"])
    from rsseg.training import train

    result = train(cfg, offline / "run", progress=False)
    assert result.last is not None and result.last.is_file()
    res = CliRunner().invoke(main, ["weights", "info", str(result.last)])
    assert res.exit_code == 0, res.output
    assert "kind: rsseg checkpoint" in res.output and "encoder: resnet18" in res.output
    assert "input bands: 3" in res.output


def test_weights_cli_list_fetch_info(offline) -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["weights", "list", "--encoder", "resnet18", "--bands", "13"])
    assert res.exit_code == 0 and "torchgeo:ResNet18_Weights.SENTINEL2_ALL_MOCO" in res.output
    assert "timm:" not in res.output  # ImageNet weights are RGB
    res = runner.invoke(main, ["weights", "list", "--encoder", "resnet18", "--bands", "3"])
    assert "timm:resnet18.a1_in1k" in res.output and "apache-2.0" in res.output and "SENTINEL2_RGB_MOCO" in res.output

    res = runner.invoke(main, ["weights", "fetch", RGB_MOCO, "-o", str(offline / "out")])
    assert res.exit_code == 2 and "model.weights=FILE" in res.output
    _cache_torchgeo(RGB_MOCO, _state())
    res = runner.invoke(main, ["weights", "fetch", RGB_MOCO, "-o", str(offline / "out")])
    assert res.exit_code == 0, res.output
    written = offline / "out" / f"{RGB_MOCO.replace(':', '-')}.pth"
    assert written.is_file()
    model = build_model(dataclasses.replace(ModelConfig(), weights=str(written)), num_classes=2, in_channels=3)
    assert torch.all(model.encoder.state_dict()["conv1.weight"] == 0.25)

    res = runner.invoke(main, ["weights", "info", str(written)])
    assert res.exit_code == 0, res.output
    assert "kind: state dict" in res.output and "input bands: 3" in res.output and "parameters: 11," in res.output
