"""The base install runs without PyTorch: ``pip install rsseg`` predicts, evaluates and opens the
viewer on ONNX Runtime, and every command or model that needs PyTorch says in one line which
extra to install (``rsseg[train]``), with exit code 2 and no traceback.

Two proofs. Here, rsseg runs in a subprocess whose import system cannot find the train extra's
modules (hidden as in an environment that lacks them; their metadata stays). ``make
test-torch-free`` (a CI step) builds a fresh venv with ``pip install .`` and runs
:func:`test_predict_in_a_venv_without_torch` against it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import REPO, SAMPLE_TILES, uint8_contract, write_raster

#: a sample chip and its building mask (2 classes)
CHIP = next(iter(sorted((SAMPLE_TILES / "val" / "images").glob("*.tif"))), None)
INSTALL_LINE = "pip install 'rsseg[train]'"


def _extras() -> tuple[list[str], dict[str, list[str]]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return project["dependencies"], project["optional-dependencies"]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower()


def _hidden_modules() -> set[str]:
    """The train extra's modules, and those its packages bring that rsseg imports; and the openvino
    extra's, so the engine is the base install's (ONNX Runtime)."""
    extras = _extras()[1]
    return ({_name(r).replace("-", "_") for r in extras["train"] + extras["openvino"]}
            | {"torchvision", "huggingface_hub"})


#: the train extra's modules and their package metadata unfindable, as in an install without them
_HIDE = """
import importlib.machinery, sys
HIDDEN = {hidden!r}

class _WithoutTrainExtra(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        return None if name.partition(".")[0] in HIDDEN else super().find_spec(name, path, target)

    @classmethod
    def find_distributions(cls, *args, **kwargs):
        return (d for d in super().find_distributions(*args, **kwargs)
                if d.name.lower().replace("-", "_") not in HIDDEN)

sys.meta_path[:] = [_WithoutTrainExtra if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
"""
#: then rsseg's CLI, and whether torch got imported
_CLI = """
from rsseg.cli.main import main
try:
    main(sys.argv[1:], prog_name="rsseg")
finally:
    print("torch imported:", "torch" in sys.modules)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RSSEG_ENGINE", None)  # a user's default (auto), not the test suite's torch
    return env


def _without_torch(*args: str | Path, cwd: Path | None = None, code: str = _CLI) -> subprocess.CompletedProcess:
    prelude = _HIDE.format(hidden=sorted(_hidden_modules()))
    return subprocess.run([sys.executable, "-c", prelude + code, *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env=_env())


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The refusal's only stderr line (exit 2, no traceback); torch was never imported."""
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "torch imported: False" in proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    return lines[0]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A small 2-class UNetFormer (background, building) with an 8-bit input contract."""
    import torch

    from rsseg.checkpoint import ModelMeta, save_model
    from rsseg.config import Config
    from rsseg.models import build_model

    cfg = Config()
    cfg.model.encoder, cfg.model.decode_channels, cfg.model.embed_dim, cfg.model.num_heads = "mobilenetv3_small_050", 32, 16, 4
    cfg.inference.tile, cfg.inference.overlap = 128, 32
    torch.manual_seed(0)
    model = build_model(cfg.model, num_classes=2, in_channels=3)
    meta = ModelMeta(classes=["background", "building"], colors=["#000000", "#ff0000"], bands=["red", "green", "blue"],
                     mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], config=cfg.to_dict(), **uint8_contract())
    return save_model(tmp_path_factory.mktemp("model") / "tiny.ckpt", model, meta)


@pytest.fixture(scope="module")
def tiny_onnx(tiny_checkpoint, tmp_path_factory) -> Path:
    """The checkpoint as a user ships it to a torch-free machine: `rsseg export` in this (full) env."""
    from click.testing import CliRunner

    from rsseg.cli.main import main

    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    res = CliRunner().invoke(main, ["export", "-m", str(tiny_checkpoint), "-o", str(out), "--size", "128"])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture
def chip() -> Path:
    if CHIP is None:
        pytest.skip("sample_tiles/val missing")
    return CHIP


def test_the_base_install_leaves_torch_to_the_train_extra() -> None:
    base, extras = _extras()
    base_names = {_name(r) for r in base}
    train = {_name(r) for r in extras["train"]}
    assert {"torch", "timm", "torchgeo", "lightning", "onnx", "onnxscript"} <= train
    assert not base_names & (train | {"torchvision"}), base_names & train
    # what the analyst gets at once: the fast engine and full-resolution map tiles
    assert {"onnxruntime", "rio-tiler", "streamlit"} <= base_names
    # make install / CI install dev: the tests train, export and run Dask
    assert any(r.startswith("rsseg[") and "train" in r for r in extras["dev"])
    assert any(r.startswith("rsseg[") and "train" in r for r in extras["all"])


@pytest.mark.parametrize("args", [["--help"], ["predict", "--help"], ["evaluate", "--help"], ["app", "--help"],
                                  ["--version"]])
def test_the_cli_answers_without_torch(args: list[str]) -> None:
    proc = _without_torch(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "torch imported: False" in proc.stdout


def test_the_viewer_and_evaluation_import_without_torch() -> None:
    """What `rsseg app` runs (its library, the inference and evaluation modules it calls) imports
    no train-extra module; rio-tiler's full-resolution tiles are there."""
    proc = _without_torch(code="import rsseg.viewer, rsseg.evaluation\n"
                               "assert rsseg.viewer.tiles_available()\nprint('torch imported:', 'torch' in sys.modules)\n")
    assert proc.returncode == 0 and "torch imported: False" in proc.stdout, proc.stderr[-2000:]


def _torch_commands(tmp: Path, ckpt: Path) -> dict[str, list[str | Path]]:
    return {
        "train": ["train", "--dataset", "folder", "--root", tmp, "--max-epochs", "1"],
        "export": ["export", "-m", ckpt, "-o", tmp / "m.onnx"],
        "import": ["import", tmp / "geoseg.ckpt", "--dataset", "loveda", "-o", tmp / "imported.ckpt"],
        "weights": ["weights", "list"],
        "stats": ["stats", "--dataset", "folder", "--root", tmp],
        "demo": ["demo", "--out", tmp / "demo"],
        "evaluate": ["evaluate", "-m", ckpt, "-o", tmp / "report"],
    }


@pytest.mark.parametrize("command", ["train", "export", "import", "weights", "stats", "demo", "evaluate"])
def test_a_command_that_needs_torch_names_the_extra(command: str, tiny_checkpoint, tmp_path) -> None:
    line = _one_error_line(_without_torch(*_torch_commands(tmp_path, tiny_checkpoint)[command], cwd=tmp_path))
    assert line.startswith(f"error: rsseg {command} needs the training extra") and line.endswith(INSTALL_LINE), line
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("flags", [[], ["--engine", "torch"], ["--engine", "onnx"]])
def test_a_pytorch_checkpoint_names_the_extra_and_the_onnx_route(flags: list[str], tiny_checkpoint, tmp_path) -> None:
    """Predicting from a .ckpt runs PyTorch (the onnx engine exports it first): the refusal names
    the extra and the .onnx that needs none, and no ONNX cache or output appears."""
    src = write_raster(tmp_path / "in.tif", np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8))
    before = set(tiny_checkpoint.parent.iterdir())
    line = _one_error_line(_without_torch("predict", src, "-m", tiny_checkpoint, "-o", tmp_path / "out.tif", *flags))
    assert f"the PyTorch checkpoint {tiny_checkpoint} needs the training extra" in line and INSTALL_LINE in line
    assert "rsseg export -m" in line and ".onnx" in line
    assert set(tmp_path.iterdir()) == {src} and set(tiny_checkpoint.parent.iterdir()) == before


def test_cuda_without_torch_names_the_extra(tiny_checkpoint, tmp_path) -> None:
    src = write_raster(tmp_path / "in.tif", np.zeros((3, 64, 64), np.uint8))
    line = _one_error_line(_without_torch("predict", src, "-m", tiny_checkpoint, "-o", tmp_path / "out.tif",
                                          "--device", "cuda"))
    assert "running on CUDA needs the training extra" in line and "--device cpu" in line


def test_a_gpu_machine_without_torch_predicts_on_the_cpu() -> None:
    """With an NVIDIA driver but no PyTorch, ``--device auto`` is the CPU (ONNX Runtime), not an error."""
    proc = _without_torch(code="from rsseg.inference import settings\nsettings._nvidia_driver = lambda: True\n"
                               "print(settings.resolve_device('auto'), settings.resolve_engine('auto', 'cpu'))\n")
    assert proc.returncode == 0 and proc.stdout.split() == ["cpu", "onnx"], proc.stdout + proc.stderr[-2000:]


@pytest.mark.slow  # the export behind it takes a minute or two on a CPU
def test_predict_and_evaluate_from_onnx_without_torch(tiny_onnx, chip, tmp_path) -> None:
    """The analyst's route: a .onnx from `rsseg export` predicts every product and is scored
    against a reference, with torch never imported."""
    out = tmp_path / "pred"
    proc = _without_torch("predict", chip, "-m", tiny_onnx, "-o", f"{out}.tif", "--vector", f"{out}.gpkg",
                          "--report", f"{out}.json", "--confidence", f"{out}.conf.tif")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "engine onnx" in proc.stdout and "torch imported: False" in proc.stdout
    with rasterio.open(f"{out}.tif") as pred, rasterio.open(chip) as src:
        assert (pred.width, pred.height, pred.crs) == (src.width, src.height, src.crs)
    assert all(Path(f"{out}{ext}").is_file() for ext in (".gpkg", ".json", ".conf.tif"))
    proc = _without_torch("evaluate", f"{out}.tif", chip.parent.parent / "masks" / chip.name, "-o", tmp_path / "report")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "torch imported: False" in proc.stdout and (tmp_path / "report" / "report.json").is_file()


@pytest.mark.skipif(not os.environ.get("RSSEG_TORCH_FREE_VENV"), reason="make test-torch-free builds the venv")
def test_predict_in_a_venv_without_torch(tiny_onnx, chip, tmp_path) -> None:
    """``pip install .`` in a fresh venv (make test-torch-free): no torch there, yet the .onnx this
    env exported predicts, and `rsseg train` names the extra."""
    venv = Path(os.environ["RSSEG_TORCH_FREE_VENV"])
    python, rsseg = venv / "bin" / "python", venv / "bin" / "rsseg"
    probe = subprocess.run([python, "-c", "import importlib.util as u; print([m for m in ('torch', 'timm', 'torchgeo', "
                            "'lightning') if u.find_spec(m)]); import onnxruntime, rio_tiler"],
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0 and probe.stdout.strip() == "[]", probe.stdout + probe.stderr
    out = tmp_path / "pred.tif"
    proc = subprocess.run([rsseg, "predict", chip, "-m", tiny_onnx, "-o", out, "--vector", tmp_path / "pred.gpkg"],
                          capture_output=True, text=True, timeout=600, env=_env())
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "engine onnx" in proc.stdout and out.is_file() and (tmp_path / "pred.gpkg").is_file()
    proc = subprocess.run([rsseg, "train", "--dataset", "folder", "--root", tmp_path], capture_output=True, text=True,
                          timeout=120, env=_env())
    assert proc.returncode == 2 and proc.stderr.strip().endswith(INSTALL_LINE), proc.stderr[-2000:]
