"""What a user sees while training: no doubled Lightning INFO lines, no adverts, no warnings
about rsseg's own files or Lightning internals, percent scores in the progress bar, and a
``curves.png`` of the epochs in the run directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import rasterio
from conftest import write_raster
from PIL import Image
from rasterio.windows import Window

from rsseg.training.curves import read_epoch_metrics, write_curves

pytestmark = pytest.mark.slow

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _tiny_folder(sample_tiles: Path, root: Path) -> Path:
    """3 real 64 x 64 crops of the sample tiles (images/ + masks/), so two epochs take seconds."""
    for i, img in enumerate(sorted((sample_tiles / "train" / "images").glob("*.tif"))[:3]):
        for sub, src_path in (("images", img), ("masks", sample_tiles / "train" / "masks" / img.name)):
            with rasterio.open(src_path) as src:
                write_raster(root / sub / f"c{i}.tif", src.read(window=Window(64, 64, 64, 64)), crs=None)
    return root


def test_training_output_is_quiet_and_draws_curves(sample_tiles, tmp_path):
    root = _tiny_folder(sample_tiles, tmp_path / "data")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "rsseg.cli.main", "train", "--dataset", "folder", "--root", str(root),
           "--max-epochs", "2", "-o", str(run), "optim.batch_size=2", "optim.crop_size=64", "optim.scales=[1.0]",
           "dataset.val_fraction=0.34"]
    env = {"RSSEG_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for noise in ("INFO", "litlogger", "Tip:", "exists and is not empty", "deprecated", "GPU available"):
        assert noise not in out, f"{noise!r} in the training output:\n{out}"
    assert "val/mIoU" not in out  # the bar shows percent (mIoU %), as the summary does
    assert "mIoU %" in out and "val mIoU" in out
    # off a terminal (captured here) one line per epoch, counted 1..N, without Lightning's v_num
    assert "epoch 1/2 done in" in out and "epoch 2/2 done in" in out and "v_num" not in out, out
    curves = run / "curves.png"
    assert curves.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(curves) as im:
        im.verify()
    epochs = read_epoch_metrics(run)
    assert sorted(epochs) == [0, 1]
    assert all("train/loss" in m and "val/mIoU" in m for m in epochs.values())


def test_curves_merge_resumed_versions_and_skip_empty_logs(tmp_path):
    assert write_curves(tmp_path) is None  # nothing logged yet: no figure
    v0, v1 = tmp_path / "logs" / "version_0", tmp_path / "logs" / "version_1"
    v0.mkdir(parents=True)
    v1.mkdir(parents=True)
    header = "epoch,step,train/loss,val/loss,val/mIoU,val/IoU/building,val/NC1\n"
    (v0 / "metrics.csv").write_text(header + "0,0,2.0,,,,\n0,1,1.0,,,,\n0,1,,1.2,0.4,0.3,5.0\n1,2,0.9,,,,\n")
    (v1 / "metrics.csv").write_text(header + "1,2,0.5,,,,\n1,3,,0.8,0.6,0.5,2.0\n")
    epochs = read_epoch_metrics(tmp_path)
    assert epochs[0]["train/loss"] == pytest.approx(1.5)  # mean over the epoch's steps
    assert epochs[1]["train/loss"] == pytest.approx(0.5) and epochs[1]["val/NC1"] == 2.0  # the resumed run wins
    path = write_curves(tmp_path)
    assert path == tmp_path / "curves.png" and path.read_bytes()[:8] == PNG_SIGNATURE
