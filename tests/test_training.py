"""End-to-end training on the real sample tiles: checkpoints, resume, Ctrl-C, evaluate."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from click.testing import CliRunner

from rsseg.checkpoint import load_model, read_meta
from rsseg.cli.main import main
from rsseg.evaluation import evaluate_checkpoint
from rsseg.inference.settings import PredictSettings
from rsseg.runconfig import training_config
from rsseg.training import train

pytestmark = pytest.mark.slow

SMALL = ["optim.batch_size=8", "optim.crop_size=128", "optim.lr=1e-3"]


def _cfg(sample_tiles: Path, epochs: int, regs=("in2nect",)):
    return training_config(
        dataset="folder", root=str(sample_tiles), regularizers=list(regs), overrides=[f"optim.max_epochs={epochs}", *SMALL]
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory, sample_tiles):
    run = tmp_path_factory.mktemp("run")
    result = train(_cfg(sample_tiles, 2, ("in2nect", "rr")), run, progress=False)
    return result


def test_training_writes_self_describing_checkpoints(trained):
    assert trained.best is not None and trained.last is not None and not trained.interrupted
    raw = torch.load(trained.best, map_location="cpu", weights_only=True)  # untrusted-file safe
    assert raw["epoch"] in (0, 1)
    meta = read_meta(trained.last)
    assert meta.classes == ["background", "building"] and meta.bands == ["red", "green", "blue"]
    assert meta.ignore_index == 255 and meta.patch_size == 128 and len(meta.mean) == 3
    assert meta.config["loss"]["regularizers"]["in2nect"]["enabled"] is True
    assert meta.class_pixel_freq is not None and abs(sum(meta.class_pixel_freq) - 1) < 1e-6
    model, meta = load_model(trained.best)
    with torch.inference_mode():
        logits = model(torch.randn(1, 3, 96, 80))
    assert logits.shape == (1, 2, 96, 80)


def test_validation_logs_per_class_metrics_and_collapse(trained):
    rows = list(csv.DictReader((trained.run_dir / "logs" / "version_0" / "metrics.csv").open()))
    cols = set(rows[0])
    for key in ("val/mIoU", "val/mF1", "val/OA", "val/IoU/building", "val/F1/background",
                "val/precision/building", "val/recall/building", "val/NC1", "val/delta_inter", "val/delta_intra",
                "train/in2nect_inter", "train/rr"):
        assert any(c.startswith(key) for c in cols), key
    mious = [float(r["val/mIoU"]) for r in rows if r.get("val/mIoU")]
    assert len(mious) == 2 and all(0 <= m <= 1 for m in mious)


def test_evaluate_checkpoint_covers_every_valid_pixel(trained, sample_tiles, tmp_path):
    conf, meta, collapse = evaluate_checkpoint(trained.best, split="val", settings=PredictSettings(tile=128, overlap=32))
    assert conf.shape == (2, 2) and int(conf.sum()) == 8 * 256 * 256  # 8 val chips, no ignore pixels
    # the classifier input's collapse, measured on the same tiles (evaluate -m reports it)
    assert {"nc1", "delta_inter", "delta_intra", "nc3"} <= set(collapse)
    assert all(math.isfinite(collapse[k]) for k in ("nc1", "delta_intra", "nc3"))
    out = tmp_path / "report"
    res = CliRunner().invoke(main, ["evaluate", "-m", str(trained.best), "--split", "val", "--tile", "128", "-o", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert report["confusion_matrix"] == conf.tolist()
    assert report["collapse"].keys() == collapse.keys()
    assert {p.name for p in out.iterdir()} == {"report.json", "report.md", "per_class.csv", "confusion.png"}
    assert "building" in (out / "report.md").read_text()


def test_resume_continues_epoch_and_optimizer_state(sample_tiles, tmp_path):
    first = train(_cfg(sample_tiles, 1, ("none",)), tmp_path / "a", progress=False)
    ck1 = torch.load(first.last, map_location="cpu", weights_only=True)
    steps1 = ck1["global_step"]
    assert steps1 > 0
    second = train(_cfg(sample_tiles, 2, ("none",)), tmp_path / "a", progress=False, resume=first.last)
    ck2 = torch.load(second.last, map_location="cpu", weights_only=True)
    progress = ck2["loops"]["fit_loop"]["epoch_progress"]["total"]
    assert progress["processed"] == 2  # the second epoch ran after the restored first one
    assert ck2["global_step"] == 2 * steps1
    # Adam's per-parameter step counter carried over rather than restarting from zero
    state1 = ck1["optimizer_states"][0]["state"]
    state2 = ck2["optimizer_states"][0]["state"]
    key = next(iter(state1))
    assert float(state2[key]["step"]) == float(state1[key]["step"]) + steps1


class _CtrlC(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 1:
            raise KeyboardInterrupt


def test_ctrl_c_leaves_the_last_good_checkpoint(sample_tiles, tmp_path):
    result = train(_cfg(sample_tiles, 3, ("none",)), tmp_path, progress=False, callbacks=[_CtrlC()])
    assert result.interrupted
    ck = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)
    assert ck["epoch"] == 0  # the completed first epoch, untouched by the interrupted second
    assert not [p for p in tmp_path.iterdir() if ".part" in p.name]
    load_model(tmp_path / "last.ckpt")


def test_train_cli_rejects_bad_input_in_one_line(tmp_path):
    res = CliRunner().invoke(main, ["train", "--dataset", "folder", "--root", str(tmp_path / "missing"), "-o", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert res.output.startswith("error: ") and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["train", "optim.lr=fast", "-o", str(tmp_path / "r")])
    assert res.exit_code == 2 and "optim.lr" in res.output


class _Batches(L.Callback):
    """Records what every training step sees (after the on-device augmentation)."""

    def __init__(self) -> None:
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.append((batch["image"].clone(), batch["mask"].clone()))


def test_paired_runs_see_identical_batches(sample_tiles, tmp_path):
    """CE and In2NeCT with one seed: same windows, order, scales, crops and flips.

    In2NeCT builds an ETF and samples pixels every step; with its own generators neither shifts
    the data streams, so a paired difference measures the method, not the draw."""
    seen = {}
    for method in ("none", "in2nect"):
        cb = _Batches()
        cfg = training_config(
            dataset="folder", root=str(sample_tiles), regularizers=[method],
            overrides=["optim.max_epochs=1", "optim.batch_size=16", "optim.crop_size=64", "optim.scales=[0.5, 1.0]",
                       "optim.seed=5"],
        )
        train(cfg, tmp_path / method, progress=False, callbacks=[cb])
        seen[method] = cb.seen
    assert len(seen["none"]) == len(seen["in2nect"]) >= 3
    for (i1, m1), (i2, m2) in zip(seen["none"], seen["in2nect"]):
        assert torch.equal(i1, i2) and torch.equal(m1, m2)
    assert not torch.equal(seen["none"][0][0], seen["none"][1][0])


def test_num_nodes_reaches_the_trainer(monkeypatch, tmp_path):
    from rsseg.training import fit

    captured = {}

    class _Stop(Exception):
        pass

    def fake_trainer(**kwargs):
        captured.update(kwargs)
        raise _Stop

    monkeypatch.setattr(fit.L, "Trainer", fake_trainer)
    cfg = training_config(dataset="folder", root=str(Path(__file__).resolve().parents[1] / "sample_tiles"))
    with pytest.raises(_Stop):
        fit.train(cfg, tmp_path, devices=1, num_nodes=3, progress=False)
    assert captured["num_nodes"] == 3 and captured["strategy"] == "ddp"
    seen = {}
    monkeypatch.setattr("rsseg.training.train", lambda cfg, out, **kw: seen.update(kw) or (_ for _ in ()).throw(_Stop()))
    CliRunner().invoke(main, ["train", "--dataset", "folder", "--root", "sample_tiles", "--num-nodes", "2",
                              "-o", str(tmp_path / "r")])
    assert seen.get("num_nodes") == 2
