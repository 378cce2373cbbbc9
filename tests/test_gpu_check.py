"""bench/gpu_check.sh --dry-run: the GPU check's steps at tiny sizes on the CPU.

Subprocess limits are safety nets against hangs, far above the idle times (the dry run takes ~45 s
on an idle 2-core machine and several minutes on a loaded one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"
STEPS = ("env", "model_speed", "train", "regularizer_overhead", "predict")


@pytest.mark.slow
@pytest.mark.timeout(2400)
@pytest.mark.skipif(sys.platform == "win32", reason="bash script")
def test_gpu_check_dry_run(tmp_path: Path) -> None:
    out = tmp_path / "results"
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"results in {out}" in proc.stdout
    for name in STEPS:
        assert (out / f"gpu-{name}.json").is_file(), name
    assert (out / "gpu-summary.md").read_text().count("## ") >= 4

    speed = json.loads((out / "gpu-model_speed.json").read_text())
    variants = {r["variant"]: r for r in speed["results"]}
    assert set(variants) == {"eager", "inference_mode+bf16+channels_last"}
    assert variants["eager"]["ratio_vs_eager"] == 1.0
    assert all(r["images_per_s"] > 0 and r["argmax_agreement_vs_eager"] > 0.5 for r in variants.values())

    train = json.loads((out / "gpu-train.json").read_text())
    assert train["epochs"] == 1 and "bf16-mixed" in train["command"]
    assert 0.0 <= train["val_mIoU_per_epoch"][0] <= 1.0

    reg = json.loads((out / "gpu-regularizer_overhead.json").read_text())
    assert {r["variant"] for r in reg["rows"]} >= {"seg", "in2nect", "ceco"}

    predict = json.loads((out / "gpu-predict.json").read_text())
    assert predict["size"] == "512x512" and predict["pipeline_mpix_s"] > 0 and predict["windows"] > 1
    # the scratch folder (generated raster, run directory) is removed, results are kept
    assert not list(tmp_path.glob("rsseg-gpu-check.*"))


def test_gpu_check_rejects_unknown_argument() -> None:
    proc = subprocess.run(["bash", str(SCRIPT), "--frobnicate"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "unknown argument '--frobnicate'" in proc.stderr


def test_gpu_check_without_cuda_fails_loudly(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(["bash", str(SCRIPT), "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode != 0 and "no CUDA device" in proc.stderr
    assert not list(tmp_path.glob("gpu-*"))
