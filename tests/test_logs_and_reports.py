"""What a run leaves in a log and in its reports: plain progress lines off a terminal (predict,
stats, training with epochs counted 1..N and no ``v_num``), the demo's overwrite rule and
regularizer choices, and reports with one unit for shares and a provenance block."""

from __future__ import annotations

import hashlib
import io
import json
import re
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import uint8_contract, write_raster
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.callbacks.progress import ProgressBar
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from rsseg.checkpoint import ModelMeta, save_model
from rsseg.cli.main import main
from rsseg.config import Config, ModelConfig
from rsseg.progress import PlainProgress, clock_text, progress_line
from rsseg.training.progress import EpochBar, EpochLog, training_progress

SIZE = 96


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- plain progress lines ---------------------------------------------------------------------------
def test_progress_line_says_done_total_rate_and_eta():
    assert clock_text(75) == "1:15" and clock_text(3725) == "1:02:05"
    assert progress_line("scene", 120, 480, "windows", 37.0, 3.2) == \
        "scene: 120/480 windows (25%), 3.2 windows/s, 0:37 elapsed, ETA 1:52"
    assert progress_line("scene", 480, 480, "windows", 150.0, 3.2) == "scene: 480/480 windows (100%), 3.2 windows/s, done in 2:30"
    assert progress_line("stats", 7, 0, "images", 5.0) == "stats: 7 images, 0:05 elapsed"  # unknown total


def test_plain_progress_writes_every_tenth_at_least_every_minute_and_the_end():
    clock, out = Clock(), io.StringIO()
    bar = PlainProgress("scene", "windows", stream=out, clock=clock)
    for done in range(1, 101):
        clock.now += 1.0
        bar(done, 100)
    lines = out.getvalue().splitlines()
    # the first call, 10 %, 20 % ... 90 %, and the last
    assert len(lines) == 11, lines
    assert lines[0].startswith("scene: 1/100 windows (1%)")
    assert lines[4] == "scene: 40/100 windows (40%), 1 windows/s, 0:39 elapsed, ETA 1:00"
    assert lines[-1] == "scene: 100/100 windows (100%), 1 windows/s, done in 1:39"
    # a slow run: no tenth passes within minutes, a line still comes every minute
    clock, out = Clock(), io.StringIO()
    slow = PlainProgress("scene", "windows", stream=out, clock=clock)
    for done in range(1, 6):
        slow(done, 1000)
        clock.now += 45.0
    assert [line.split(" (")[0] for line in out.getvalue().splitlines()] == [
        "scene: 1/1,000 windows", "scene: 3/1,000 windows", "scene: 5/1,000 windows"]


def test_cli_progress_off_a_terminal_is_plain_lines(monkeypatch):
    from rsseg.cli.progress import progress_bar

    err = io.StringIO()  # a file: not a terminal
    monkeypatch.setattr(sys, "stderr", err)
    with progress_bar("scene", "windows") as on_progress:
        assert isinstance(on_progress, PlainProgress)
        for done in range(1, 5):
            on_progress(done, 4)
    assert err.getvalue().splitlines()[-1].startswith("scene: 4/4 windows (100%)")

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    with progress_bar("scene", "windows") as on_progress:
        assert not isinstance(on_progress, PlainProgress)  # the rich bar


# -- training: epochs 1..N, no v_num --------------------------------------------------------------
class Tiny(L.LightningModule):
    """A linear model on 8 random rows: 4 steps per epoch, metrics logged as the segmentation task logs them."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def _loader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.randn(8, 2, generator=torch.Generator().manual_seed(0))), batch_size=2)

    train_dataloader = val_dataloader = _loader

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("mIoU %", 50.0, prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path: Path, bar: ProgressBar) -> tuple[L.Trainer, Tiny]:
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=CSVLogger(tmp_path), callbacks=[bar],
                        enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0)
    module = Tiny()
    trainer.fit(module)
    return trainer, module


def test_training_log_has_one_line_per_epoch_counted_from_one_and_no_v_num(tmp_path):
    out = io.StringIO()
    log = EpochLog(stream=out, every_s=0)  # every_s 0: a step line at each step between the first and the last
    trainer, module = _fit(tmp_path, log)
    lines = out.getvalue().splitlines()
    assert "v_num" in ProgressBar.get_metrics(log, trainer, module)  # what Lightning would have shown
    assert not any("v_num" in line for line in lines), lines
    epochs = [line for line in lines if " done in " in line]
    assert [e.split(" done")[0] for e in epochs] == ["epoch 1/2", "epoch 2/2"], lines
    assert "train/loss " in epochs[0] and "mIoU % 50" in epochs[0] and "ETA " in epochs[0]
    assert "ETA" not in epochs[1]  # nothing left after the last epoch
    steps = [line for line in lines if "steps" in line]
    assert steps and steps[0].startswith("epoch 1/2: 2/4 steps (50%)"), lines


def test_the_terminal_bar_counts_epochs_from_one_and_drops_v_num(tmp_path):
    assert isinstance(training_progress(terminal=False), EpochLog)
    bar = training_progress(terminal=True)
    assert isinstance(bar, EpochBar)
    bar.disable()  # nothing drawn in the test; the trainer is what the bar reads
    trainer, module = _fit(tmp_path, bar)
    assert "v_num" in RichProgressBar.get_metrics(bar, trainer, module)
    assert "v_num" not in bar.get_metrics(trainer, module)
    assert bar._get_train_description(0).strip() == "epoch 1/2"  # Lightning's own says "Epoch 0/1"


# -- demo: overwrite and regularizer choices ------------------------------------------------------
def test_demo_refuses_a_folder_holding_a_run_without_overwrite(tmp_path, sample_tiles):
    from rsseg.demo import check_demo_dir

    out = tmp_path / "demo"
    (out / "run").mkdir(parents=True)
    (out / "run" / "best.ckpt").write_bytes(b"old")
    res = CliRunner().invoke(main, ["demo", "-o", str(out), "--samples", str(sample_tiles), "--epochs", "1"])
    assert res.exit_code == 2, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "already holds a demo run (run)" in errors[0] and "--overwrite" in errors[0], res.output
    assert sorted(p.name for p in out.rglob("*")) == ["best.ckpt", "run"]  # nothing trained, nothing written
    check_demo_dir(out, overwrite=True)  # --overwrite replaces it
    check_demo_dir(tmp_path / "new", overwrite=False)  # a new folder is fine


def test_demo_regularizer_choices_are_trains():
    from rsseg.cli.demo import command as demo
    from rsseg.cli.train import command as train
    from rsseg.losses.regularizers import regularizer_names

    def choices(command):
        return next(p.type.choices for p in command.params if p.name == "regularizers")

    assert list(choices(demo)) == list(choices(train)) == [*regularizer_names(), "none"]
    res = CliRunner().invoke(main, ["demo", "-r", "in2nectt"])
    assert res.exit_code == 2 and "in2nectt" in res.output and "in2nect" in res.output.split("in2nectt")[-1]


# -- reports: one unit, provenance ----------------------------------------------------------------
@pytest.fixture(scope="module")
def assets(tmp_path_factory, sample_tiles) -> dict[str, Path]:
    """A 96 x 96 crop of the Tanzania sample, its mask, a folder dataset of it and an untrained checkpoint."""
    import rasterio
    from rasterio.windows import Window

    from rsseg.models import build_model

    d = tmp_path_factory.mktemp("assets")
    with rasterio.open(sample_tiles / "tanzania" / "image.tif") as s:
        win = Window(0, 0, SIZE, SIZE)
        image, transform, crs = s.read(window=win), s.window_transform(win), s.crs
    with rasterio.open(sample_tiles / "tanzania" / "mask.tif") as s:
        mask = s.read(1, window=Window(0, 0, SIZE, SIZE)).astype(np.uint8)
    a = {"image": write_raster(d / "scene.tif", image, crs=crs, transform=transform),
         "mask": write_raster(d / "mask.tif", mask, crs=crs, transform=transform)}
    for split in ("train", "val"):
        write_raster(d / "ds" / split / "images" / "t.tif", image, crs=crs, transform=transform)
        write_raster(d / "ds" / split / "masks" / "t.tif", mask, crs=crs, transform=transform)
    a["ds"] = d / "ds"
    meta = ModelMeta(classes=["background", "building"], colors=["#000000", "#ff0000"], bands=["red", "green", "blue"],
                     mean=[0.45, 0.45, 0.4], std=[0.22, 0.2, 0.2], config=Config().to_dict(), **uint8_contract())
    a["ckpt"] = save_model(d / "m.ckpt", build_model(ModelConfig(), num_classes=2, in_channels=3).eval(), meta)
    return a


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_provenance(block: dict, inputs: list[str], model: Path | None) -> None:
    from rsseg import __version__

    assert block["rsseg_version"] == __version__
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", block["created_utc"])
    assert block["inputs"] == inputs
    assert block["model"] == (None if model is None else {"file": model.name, "sha256": _sha256(model)})


def test_predict_report_shares_are_fractions_and_every_report_says_where_it_comes_from(assets, tmp_path):
    out, report = tmp_path / "classes.tif", tmp_path / "areas.json"
    res = CliRunner().invoke(main, ["predict", str(assets["image"]), "-m", str(assets["ckpt"]), "-o", str(out),
                                    "--report", str(report), "--reference", str(assets["mask"]), "--tile", "64",
                                    "--overlap", "16", "--min-area", "8", "--vector", str(tmp_path / "b.gpkg"),
                                    "--engine", "torch"])
    assert res.exit_code == 0, res.output
    assert re.search(r"scene: \d+/\d+ windows \(100%\).*done in", res.output), res.output  # not a terminal: plain lines
    rep = json.loads(report.read_text())
    shares = [c["area_fraction"] for c in rep["classes"]]
    assert all(0 <= s <= 1 for s in shares) and sum(shares) == pytest.approx(1)
    assert "percent" not in rep["classes"][0]
    assert 0 <= rep["metrics"]["OA"] <= 1  # scores in the same unit as the shares
    block = rep["provenance"]
    _check_provenance(block, [str(assets["image"]), str(assets["mask"])], assets["ckpt"])
    settings = block["settings"]
    assert (settings["tile"], settings["overlap"], settings["device"], settings["min_area"]) == (64, 16, "cpu", "8m2")
    assert {"tta", "engine", "batch", "simplify", "scale", "bands", "regularize", "object_classes"} <= set(settings)

    # evaluate PRED REF: no model made these rasters as far as it knows
    res = CliRunner().invoke(main, ["evaluate", str(out), str(assets["mask"]), "-o", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    block = json.loads((tmp_path / "rep" / "report.json").read_text())["provenance"]
    _check_provenance(block, [str(out), str(assets["mask"])], None)
    assert block["settings"]["classes"] == ["background", "building"]


def test_evaluate_checkpoint_report_names_the_model_and_its_settings(assets, tmp_path):
    res = CliRunner().invoke(main, ["evaluate", "-m", str(assets["ckpt"]), "--root", str(assets["ds"]), "--tile", "64",
                                    "--overlap", "16", "--engine", "torch", "-o", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    block = json.loads((tmp_path / "rep" / "report.json").read_text())["provenance"]
    _check_provenance(block, [str(assets["ds"])], assets["ckpt"])
    assert (block["settings"]["split"], block["settings"]["tile"], block["settings"]["overlap"]) == ("val", 64, 16)
    assert (block["settings"]["engine"], block["settings"]["device"]) == ("torch", "cpu")


@pytest.mark.slow  # the first run exports the checkpoint to ONNX (cached beside it for the second)
@pytest.mark.parametrize("engine", ["onnx", "openvino"])
def test_evaluate_checkpoint_with_a_file_engine_measures_collapse_on_the_torch_model(assets, tmp_path, engine):
    """The file engines end at the logits: the collapse diagnostics come from the checkpoint's torch model."""
    if engine == "openvino":
        pytest.importorskip("openvino")
    res = CliRunner().invoke(main, ["evaluate", "-m", str(assets["ckpt"]), "--root", str(assets["ds"]), "--tile", "64",
                                    "--overlap", "16", "--engine", engine, "-o", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["provenance"]["settings"]["engine"] == engine
    assert "nc1" in report["collapse"] and "collapse of the classifier input: nc1" in res.output


def test_stats_json_output_is_named_json(tmp_path, sample_tiles):
    res = CliRunner().invoke(main, ["stats", "--root", str(sample_tiles), "-o", str(tmp_path / "s.csv")])
    assert res.exit_code == 2 and "-o" in res.output and ".csv" in res.output and ".json" in res.output, res.output
    assert not (tmp_path / "s.csv").exists()
