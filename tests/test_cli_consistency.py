"""One name per concept across the subcommands: the agreed option names,
--overwrite on every command that writes, ``train --print-config``, the checkpoint's absolute
dataset root (``evaluate -m`` from another directory) and predict's closing summary."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from conftest import make_folder, uint8_contract, write_raster

from rsseg.checkpoint import ModelMeta, save_model
from rsseg.cli.main import COMMANDS, main
from rsseg.cli.predict_summary import human_size
from rsseg.config import Config, ModelConfig
from rsseg.models import build_model
from rsseg.runconfig import training_config

TINY = ["optim.crop_size=32", "optim.scales=[1.0]", "optim.batch_size=2", "optim.lr=1e-3"]

#: command -> option names its --help must list (one name per concept; see README "A short tour")
AGREED: dict[str, list[str]] = {
    "stats": ["--root", "-c, --config", "-o, --out", "--overwrite"],
    "train": ["--root", "-c, --config", "-o, --out", "--overwrite", "--batch-size", "--devices", "--print-config"],
    "evaluate": ["-m, --model", "--root", "-o, --out", "--overwrite", "--window-batch", "--device"],
    "predict": ["-m, --model", "-o, --out", "--overwrite", "--window-batch", "--device"],
    "export": ["-m, --model", "-o, --out", "--overwrite"],
    "import": ["-o, --out", "--overwrite"],
    "demo": ["-o, --out", "--overwrite"],
}
#: command -> names retired for the agreed ones (or kept for the other meaning on another command)
RETIRED: dict[str, list[str]] = {
    "stats": ["path"],
    "train": ["--device", "--window-batch", "--model", "--checkpoint"],
    "evaluate": ["--checkpoint", "--batch", "--batch-size", "--devices"],
    "predict": ["--checkpoint", "--batch", "--batch-size", "--devices"],
    "export": ["checkpoint"],
}


def run(*args: str, **kw):
    return CliRunner().invoke(main, list(args), **kw)


def _params(name: str) -> set[str]:
    """Every option string and argument name of a subcommand."""
    command = main.get_command(click.Context(main), name)
    names: set[str] = set()
    for p in command.params:
        names.update(p.opts if isinstance(p, click.Option) else [p.name])
    return names


def assert_refused_naming_overwrite(res) -> None:
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--overwrite" in lines[0], res.output


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RSSEG_CACHE_DIR", str(tmp_path / "cache"))


# ------------------------------------------------------------------------------ names
@pytest.mark.parametrize("name", list(AGREED))
def test_help_lists_the_agreed_names(name):
    assert name in COMMANDS
    res = run(name, "--help")
    assert res.exit_code == 0, res.output
    for option in AGREED[name]:
        assert re.search(rf"^\s+{re.escape(option)}\b", res.output, re.M), (name, option, res.output)
    params = _params(name)
    for option in AGREED[name]:
        assert set(option.split(", ")) <= params, (name, option)
    for old in RETIRED.get(name, []):
        assert old not in params, (name, old)


def test_the_two_pairs_that_differ_say_so_in_their_help():
    # help text wraps; compare with single spaces
    train, predict, evaluate = (" ".join(run(n, "--help").output.split()) for n in ("train", "predict", "evaluate"))
    assert "count" in train and "predict's --device" in train and "--window-batch" in train
    for text in (predict, evaluate):
        assert "Where the model runs" in text and "--devices is a count" in text
    assert "chips per training step" in predict  # (click may break --batch-size at its hyphen)


# --------------------------------------------------------------------------- --overwrite
def test_stats_refuses_an_existing_json_without_overwrite(tmp_path):
    root = make_folder(tmp_path / "data")
    out = tmp_path / "stats.json"
    out.write_text("{\"mine\": 1}")
    res = run("stats", "--root", str(root), "-o", str(out))
    assert_refused_naming_overwrite(res)
    assert json.loads(out.read_text()) == {"mine": 1}
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.json")), "work was done"
    res = run("stats", "--root", str(root), "-o", str(out), "--overwrite")
    assert res.exit_code == 0, res.output
    assert "pixel_counts" in json.loads(out.read_text())


def test_stats_without_root_reads_the_config_root_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the bundled folder config's root is sample_tiles, absent here
    res = run("stats", "-o", "s.json")
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1, res.output
    assert f"{tmp_path / 'sample_tiles'} does not exist" in res.stderr


def test_evaluate_refuses_an_existing_report_without_overwrite(tmp_path):
    pred = write_raster(tmp_path / "pred.tif", np.tile(np.array([[0, 1]], np.uint8), (16, 8)))
    ref = write_raster(tmp_path / "ref.tif", np.tile(np.array([[0, 1]], np.uint8), (16, 8)))
    rep = tmp_path / "rep"
    rep.mkdir()
    (rep / "report.md").write_text("my notes")
    res = run("evaluate", str(pred), str(ref), "--classes", "background,building", "-o", str(rep))
    assert_refused_naming_overwrite(res)
    assert "report.md" in res.stderr
    assert {p.name for p in rep.iterdir()} == {"report.md"} and (rep / "report.md").read_text() == "my notes"
    res = run("evaluate", str(pred), str(ref), "--classes", "background,building", "-o", str(rep), "--overwrite")
    assert res.exit_code == 0, res.output
    assert json.loads((rep / "report.json").read_text())["OA"] == pytest.approx(1.0)


def test_train_refuses_a_run_directory_with_checkpoints_before_any_work(tmp_path):
    root = make_folder(tmp_path / "data")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "best.ckpt").write_bytes(b"an earlier run")
    res = run("train", "--dataset", "folder", "--root", str(root), "--max-epochs", "1", "-o", str(run_dir), *TINY)
    assert_refused_naming_overwrite(res)
    assert "best.ckpt" in res.stderr
    assert {p.name for p in run_dir.iterdir()} == {"best.ckpt"} and (run_dir / "best.ckpt").read_bytes() == b"an earlier run"
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*")), "statistics were computed"


# ------------------------------------------------- --print-config, absolute root, evaluate -m elsewhere
def test_print_config_is_the_resolved_yaml_and_trains_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_folder(tmp_path / "data")
    args = ["--dataset", "folder", "--root", "data", "-r", "in2nect", "--batch-size", "3", "optim.lr=0.002"]
    res = run("train", *args, "-o", "run", "--print-config")
    assert res.exit_code == 0, res.output
    printed = yaml.safe_load(res.stdout)
    expected = training_config(dataset="folder", root="data", regularizers=["in2nect"],
                               overrides=["optim.batch_size=3", "optim.lr=0.002"]).to_dict()
    assert printed == expected
    assert printed["dataset"]["root"] == str(tmp_path / "data")  # absolute
    assert printed["optim"]["batch_size"] == 3 and printed["loss"]["regularizers"]["in2nect"]["enabled"] is True
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_train_in_one_directory_evaluate_from_another(tmp_path, monkeypatch):
    (tmp_path / "project").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    make_folder(tmp_path / "project" / "data", n=6)
    args = ["--dataset", "folder", "--root", "data", "--max-epochs", "1", *TINY]
    printed = run("train", *args, "-o", "run", "--print-config")
    res = run("train", *args, "-o", "run")
    assert res.exit_code == 0, res.output
    run_dir = tmp_path / "project" / "run"
    stored = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert stored == yaml.safe_load(printed.stdout)  # --print-config shows what a run stores
    assert stored["dataset"]["root"] == str(tmp_path / "project" / "data")

    monkeypatch.chdir(tmp_path / "elsewhere")
    ckpt = run_dir / "last.ckpt"
    res = run("evaluate", "-m", str(ckpt), "--split", "val", "--tile", "64", "--window-batch", "2", "--device", "cpu",
              "-o", "rep")
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "elsewhere" / "rep" / "report.json").read_text())
    assert report["classes"] == ["background", "building"] and 0 <= report["OA"] <= 1

    # a second training into the same run directory needs --overwrite; --resume continues it
    res = run("train", *args, "-o", str(run_dir))
    assert_refused_naming_overwrite(res)


# ------------------------------------------------------------------------- predict summary
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    model = build_model(ModelConfig(), num_classes=2, in_channels=3).eval()
    meta = ModelMeta(classes=["background", "building"], colors=["#000000", "#ff0000"], bands=["red", "green", "blue"],
                     mean=[0.6, 0.5, 0.4], std=[0.25, 0.2, 0.2], config=Config().to_dict(), **uint8_contract())
    return save_model(tmp_path_factory.mktemp("ckpt") / "m.ckpt", model, meta)


def test_predict_ends_with_a_summary_of_outputs_areas_and_time(checkpoint, tmp_path):
    rng = np.random.default_rng(1)
    src = write_raster(tmp_path / "scene.tif", rng.integers(0, 255, (3, 96, 96), dtype=np.uint8))
    out, report = tmp_path / "c.tif", tmp_path / "areas.json"
    res = run("predict", str(src), "-m", str(checkpoint), "-o", str(out), "--report", str(report),
              "--tile", "64", "--overlap", "16", "--window-batch", "2", "--device", "cpu")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    start = lines.index("outputs")
    for path in (out, report):
        assert f"  {path}  {human_size(path.stat().st_size)}" in lines[start:], res.stdout
    sidecars = [out.with_name("c.tif.aux.xml"), out.with_suffix(".qml")]  # the class raster's GIS sidecars
    size = human_size(sum(p.stat().st_size for p in sidecars))
    assert f"  + {', '.join(p.name for p in sidecars)}  {size}" in lines[start:], res.stdout
    areas = json.loads(report.read_text())
    total = areas["total_area_m2"]
    assert total == pytest.approx(96 * 96 * 4, rel=0.01)  # 2 m pixels
    unit_div = 1e4 if total >= 1e4 else 1.0
    for row in areas["classes"]:
        line = next(x for x in lines if x.strip("│ ").startswith(row["class_name"]))
        assert f"{row['area_m2'] / unit_div:,.2f}" in line and f"{row['pixels']:,}" in line, line
    assert any(x.strip("│ ").startswith("total") and f"{96 * 96:,}" in x for x in lines)
    assert re.search(r"^time: \d+\.\d s$", lines[-1]), lines[-1]
