"""What ``rsseg train`` and ``rsseg stats`` refuse, and why: one table of bad inputs.

Every case runs the real command line on a small synthetic folder dataset (64 x 64 tiles) and
asserts the exit code, a one-line message naming the problem, that the run directory / output
holds nothing new (or its old files are byte-identical), and that no temporary file is left.
Cases that hold today are in the table too, so they keep holding. The few cases that must train
(Ctrl-C, resume, disk full) use 32-pixel crops and one or two epochs.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import make_folder, write_onnx_model, write_raster

from rsseg.cli.main import main

TINY = ["optim.crop_size=32", "optim.scales=[1.0]", "optim.batch_size=2", "optim.lr=1e-3"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Statistics cache and the temp folder inside tmp_path, so leftovers can be counted."""
    monkeypatch.setenv("RSSEG_CACHE_DIR", str(tmp_path / "cache"))
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    yield
    assert not list(temp.iterdir()), "files left in the temp folder"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} \
        if folder.exists() else {}


def cli(args: list[str], env: dict[str, str] | None = None):
    return CliRunner().invoke(main, args, env=env)


#: a plain progress line (off a terminal, as under the test runner): "NAME: 2/3 images (67%), ..."
PROGRESS_LINE = re.compile(r"^[^:]+: \d+/\d+ \w+ \(\d+%\)")


def assert_one_line_refusal(res, *fragments: str, code: int = 2) -> str:
    # stdout may hold a progress bar when the refusal comes mid-training, stderr progress lines before it
    out = "\n".join(line for line in res.stderr.strip().splitlines() if not PROGRESS_LINE.match(line))
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output and len(out.splitlines()) == 1, res.output
    assert out.startswith("error: "), out
    for f in fragments:
        assert f.lower() in out.lower(), (f, out)
    return out


# ---------------------------------------------------------------------------------- bad data
def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header intact, pixels missing: opens, then fails to read


def _truncated_image(root: Path) -> str:
    truncate(root / "images" / "t2.tif")
    return "t2.tif"


def _random_bytes_image(root: Path) -> str:
    (root / "images" / "t1.tif").write_bytes(os.urandom(2048))
    return "t1.tif"


def _truncated_mask(root: Path) -> str:
    truncate(root / "masks" / "t0.tif")
    return "t0.tif"


def _one_band_image(root: Path) -> str:
    write_raster(root / "images" / "t1.tif", np.zeros((1, 64, 64), np.uint8))
    return "1 band"


def _mask_out_of_range(root: Path) -> str:
    write_raster(root / "masks" / "t0.tif", np.full((64, 64), 7, np.uint8))
    return "values [7]"


def _size_mismatch(root: Path) -> str:
    write_raster(root / "masks" / "t2.tif", np.zeros((48, 64), np.uint8))
    return "t2.tif"


def _image_without_mask(root: Path) -> str:
    (root / "masks" / "t3.tif").unlink()
    return "no mask"


def _empty_folders(root: Path) -> str:
    for p in [*(root / "images").iterdir(), *(root / "masks").iterdir()]:
        p.unlink()
    return "no rasters"


def _no_layout(root: Path) -> str:
    for p in [*(root / "images").iterdir(), *(root / "masks").iterdir()]:
        p.unlink()
    (root / "images").rmdir()
    (root / "masks").rmdir()
    return "no images/masks"


def _same_name_png_and_tif(root: Path) -> str:
    write_raster(root / "images" / "t1.png", np.zeros((3, 64, 64), np.uint8), crs=None)
    return "share the name"


def _rgb_colour_mask(root: Path) -> str:
    write_raster(root / "masks" / "t1.tif", np.full((3, 64, 64), 200, np.uint8))
    return "not one pixel matches dataset.colors"


def _corrupt_val_file(root: Path) -> str:
    """A val/ folder whose one image is truncated: refused before the first training epoch."""
    make_folder(root / "train", 3)
    make_folder(root / "val", 2)
    truncate(root / "val" / "images" / "t1.tif")
    return "t1.tif"


def _uint16_among_uint8(root: Path) -> str:
    write_raster(root / "images" / "t1.tif", np.full((3, 64, 64), 1000, np.uint16))
    return "uint16"


BAD_DATA: list[tuple[str, Callable[[Path], str]]] = [
    ("truncated-image", _truncated_image),
    ("random-bytes-image", _random_bytes_image),
    ("truncated-mask", _truncated_mask),
    ("wrong-band-count", _one_band_image),
    ("mask-values-out-of-range", _mask_out_of_range),
    ("colour-mask-instead-of-index", _rgb_colour_mask),
    ("image-mask-size-mismatch", _size_mismatch),
    ("image-without-mask", _image_without_mask),
    ("empty-folders", _empty_folders),
    ("no-images-masks-layout", _no_layout),
    ("png-and-tif-share-a-name", _same_name_png_and_tif),
    ("uint16-among-uint8-images", _uint16_among_uint8),
]


@pytest.mark.parametrize("command", ["train", "stats"])
@pytest.mark.parametrize(("case", "spoil"), BAD_DATA, ids=[c for c, _ in BAD_DATA])
def test_bad_dataset_is_refused_in_one_line(tmp_path, command, case, spoil):
    root = make_folder(tmp_path / "data")
    fragment = spoil(root)
    data_before = snapshot(root)
    run = tmp_path / "run"
    out = tmp_path / "stats.json"
    if command == "train":
        res = cli(["train", "--dataset", "folder", "--root", str(root), "--max-epochs", "1", "-o", str(run), *TINY])
    else:
        res = cli(["stats", "--root", str(root), "-o", str(out)])
    assert_one_line_refusal(res, fragment)
    assert not run.exists() and not out.exists()
    assert snapshot(root) == data_before


def test_corrupt_val_file_is_refused_before_training(tmp_path):
    root = tmp_path / "data"
    fragment = _corrupt_val_file(root)
    run = tmp_path / "run"
    res = cli(["train", "--dataset", "folder", "--root", str(root), "--max-epochs", "1", "-o", str(run), *TINY])
    assert_one_line_refusal(res, fragment, "truncated or corrupt")
    assert not run.exists()


# ------------------------------------------------------------------------- cases that hold
def test_stats_skips_non_raster_files_and_reads_png_tif_mixes(tmp_path):
    root = make_folder(tmp_path / "data", 3)
    (root / "images" / "notes.txt").write_text("survey notes")
    (root / "images" / "t0.tif.aux.xml").write_text("<PAMDataset/>")
    (root / "masks" / ".DS_Store").write_bytes(b"\0\1")
    # a PNG image paired with a GeoTIFF mask of the same name
    (root / "images" / "t2.tif").unlink()
    write_raster(root / "images" / "t2.png", np.zeros((3, 64, 64), np.uint8), crs=None)
    out = tmp_path / "stats.json"
    res = cli(["stats", "--root", str(root), "--split", "train", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert out.is_file()


# --------------------------------------------------------------------------- bad settings
@pytest.fixture
def folder(tmp_path) -> Path:
    return make_folder(tmp_path / "data")


def _old_run(run: Path) -> None:
    run.mkdir()
    (run / "config.yaml").write_text("old: run\n")
    (run / "last.ckpt").write_bytes(b"old checkpoint bytes")


SETTINGS: list[tuple[str, list[str], str]] = [
    ("lr-zero", ["optim.lr=0"], "optim.lr"),
    ("lr-negative", ["optim.lr=-0.001"], "optim.lr"),
    ("batch-size-zero", ["--batch-size", "0"], "optim.batch_size"),
    ("max-epochs-zero", ["--max-epochs", "0"], "optim.max_epochs"),
    ("max-epochs-negative", ["optim.max_epochs=-3"], "optim.max_epochs"),
    ("lr-not-a-number", ["optim.lr=fast"], "optim.lr"),
    ("crop-not-multiple-of-32", ["optim.crop_size=50"], "optim.crop_size"),
    ("resume-and-init-from", ["--resume", "{old}/last.ckpt", "--init-from", "{old}/last.ckpt"], "not both"),
]


@pytest.mark.parametrize(("case", "args", "fragment"), SETTINGS, ids=[c for c, _, _ in SETTINGS])
def test_bad_settings_are_refused_before_any_work(tmp_path, folder, case, args, fragment):
    run = tmp_path / "run"
    _old_run(run)
    before = snapshot(run)
    args = [a.replace("{old}", str(run)) for a in args]
    # no optim.* overrides here: they would win over the --batch-size / --max-epochs flags
    res = cli(["train", "--dataset", "folder", "--root", str(folder), "-o", str(run), "optim.crop_size=32", *args])
    assert_one_line_refusal(res, fragment)
    assert snapshot(run) == before


def test_run_directory_that_cannot_be_written(tmp_path, folder):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    res = cli(["train", "--dataset", "folder", "--root", str(folder), "-o", str(blocker / "run"), *TINY])
    assert_one_line_refusal(res, "afile", "not a folder")
    assert blocker.read_text() == "not a folder"
    res = cli(["stats", "--root", str(folder), "-o", str(blocker / "stats.json")])
    assert_one_line_refusal(res, "afile")


def test_missing_dataset_root(tmp_path):
    res = cli(["train", "--dataset", "folder", "--root", str(tmp_path / "missing"), "-o", str(tmp_path / "run")])
    assert_one_line_refusal(res, "missing")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------ --resume
class _Evil:
    """Unpickling this runs a shell command: what a crafted checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {}, "rsseg": {"classes": []}, "epoch": 0, "loops": {}, "optimizer_states": [],
                "payload": _Evil(marker)}, path)
    return path


def _weights_only_checkpoint(path: Path) -> Path:
    from rsseg.checkpoint import ModelMeta, save_model

    meta = ModelMeta(classes=["background", "building"], colors=["#000000", "#ff3030"], bands=["red", "green", "blue"],
                     mean=[0.5] * 3, std=[0.2] * 3)
    return save_model(path, torch.nn.Conv2d(3, 2, 1), meta)


RESUMES: list[tuple[str, Callable[[Path, Path], Path], str]] = [
    ("random-bytes", lambda d, m: _write(d / "random.ckpt", os.urandom(4096)), "not a pytorch file"),
    ("crafted-pickle-runs-code", _crafted, "crafted.ckpt"),
    ("empty-file", lambda d, m: _write(d / "empty.ckpt", b""), "empty.ckpt"),
    ("missing-file", lambda d, m: d / "nope.ckpt", "not found"),
    ("plain-torch-file-no-metadata", lambda d, m: _save(d / "plain.ckpt", {"weights": torch.zeros(2)}), "not an rsseg checkpoint"),
    ("weights-without-training-state", lambda d, m: _weights_only_checkpoint(d / "weights.ckpt"), "--init-from"),
    ("exported-onnx-model", lambda d, m: write_onnx_model(d / "model.onnx"), "is an exported ONNX model, not a checkpoint"),
]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


@pytest.mark.parametrize(("case", "make", "fragment"), RESUMES, ids=[c for c, _, _ in RESUMES])
def test_resume_file_is_validated_safely_first(tmp_path, folder, case, make, fragment):
    marker = tmp_path / "code-ran"
    ckpt = make(tmp_path, marker) if case != "crafted-pickle-runs-code" else _crafted(tmp_path / "crafted.ckpt", marker)
    run = tmp_path / "run"
    # the variable that makes torch.load(weights_only=None) unpickle anything
    res = cli(["train", "--dataset", "folder", "--root", str(folder), "-o", str(run), "--resume", str(ckpt), *TINY],
              env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"})
    out = assert_one_line_refusal(res, fragment)
    assert "weights_only" not in out and "Weights only" not in out  # never torch's advice to run the file
    assert not marker.exists(), "the crafted checkpoint ran code"
    assert not run.exists()


# ------------------------------------------------------------------ runs that train (tiny)
@pytest.fixture
def tiny(tmp_path) -> Path:
    """32 x 32 tiles: one training step and one validation window per epoch."""
    return make_folder(tmp_path / "tiny", size=32)


class _NoNewBest(L.Callback):
    """From epoch 1 on, the best score is out of reach: an epoch without a new best (the case in
    which Lightning's save_last used to skip last.ckpt)."""

    def on_validation_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch >= 1:
            for cb in trainer.checkpoint_callbacks:
                if cb.monitor is not None:
                    cb.best_k_models = dict.fromkeys(cb.best_k_models, torch.tensor(2.0))


class _CtrlCAt(L.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == 0:
            raise KeyboardInterrupt


def _patch_callbacks(monkeypatch, *extra: L.Callback) -> None:
    """Add callbacks to the Trainer the CLI builds (the CLI takes none)."""
    import rsseg.training.fit as fit

    def train(*args, **kwargs):
        return fit.train(*args, **{**kwargs, "callbacks": [*extra]})

    monkeypatch.setattr("rsseg.training.train", train)


@pytest.mark.slow
def test_ctrl_c_exits_130_and_resume_continues_from_the_right_epoch(tmp_path, tiny, monkeypatch):
    run = tmp_path / "run"
    base = ["train", "--dataset", "folder", "--root", str(tiny), "-o", str(run), *TINY]
    _patch_callbacks(monkeypatch, _NoNewBest(), _CtrlCAt(2))
    res = cli([*base, "--max-epochs", "3"])
    assert res.exit_code == 130, res.output
    assert "interrupted" in res.output and "--resume" in res.output
    last = torch.load(run / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 1  # written after epoch 1 although epoch 1 brought no new best
    steps = last["global_step"] // 2
    assert not [p for p in run.iterdir() if ".part" in p.name]

    _patch_callbacks(monkeypatch)
    res = cli([*base, "--max-epochs", "3", "--resume", str(run / "last.ckpt")], env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"})
    assert res.exit_code == 0, res.output
    done = torch.load(run / "last.ckpt", map_location="cpu", weights_only=True)
    assert done["epoch"] == 2 and done["global_step"] == 3 * steps  # epoch 2 ran once; 0 and 1 not repeated
    assert done["loops"]["fit_loop"]["epoch_progress"]["total"]["processed"] == 3


@pytest.mark.slow
def test_best_ckpt_keeps_the_weights_and_last_ckpt_the_training_state(tmp_path, tiny):
    """best.ckpt is for predicting (weights + rsseg metadata, no optimizer state); last.ckpt resumes.
    A checkpoint with optimizer state (last.ckpt, and every best.ckpt written before) still loads."""
    from rsseg.checkpoint import load_model, read_meta

    run = tmp_path / "run"
    base = ["train", "--dataset", "folder", "--root", str(tiny), "-o", str(run), *TINY]
    res = cli([*base, "--max-epochs", "1"])
    assert res.exit_code == 0, res.output
    best, last = (torch.load(run / name, map_location="cpu", weights_only=True) for name in ("best.ckpt", "last.ckpt"))
    assert "optimizer_states" not in best and "lr_schedulers" not in best and last["optimizer_states"]
    assert best["rsseg"] == last["rsseg"] and best["state_dict"].keys() == last["state_dict"].keys()
    assert all(torch.equal(v, last["state_dict"][k]) for k, v in best["state_dict"].items())  # one epoch: same weights
    assert (run / "best.ckpt").stat().st_size < 0.6 * (run / "last.ckpt").stat().st_size
    for name in ("best.ckpt", "last.ckpt"):
        model, meta = load_model(run / name)
        assert meta == read_meta(run / name) and meta.classes == ["background", "building"]
    before = snapshot(run)
    res = cli([*base, "--max-epochs", "2", "--resume", str(run / "best.ckpt")])
    assert_one_line_refusal(res, "best.ckpt holds weights but no training state", "resume from last.ckpt", "--init-from")
    assert snapshot(run) == before
    res = cli([*base, "--max-epochs", "2", "--resume", str(run / "last.ckpt")])
    assert res.exit_code == 0, res.output
    assert torch.load(run / "last.ckpt", map_location="cpu", weights_only=True)["epoch"] == 1


@pytest.mark.slow
def test_ctrl_c_in_the_first_epoch_leaves_no_run_directory(tmp_path, tiny, monkeypatch):
    run = tmp_path / "run"
    _patch_callbacks(monkeypatch, _CtrlCAt(0))
    res = cli(["train", "--dataset", "folder", "--root", str(tiny), "-o", str(run), "--max-epochs", "1", *TINY])
    assert res.exit_code == 130, res.output
    assert "no epoch had completed" in res.output
    assert not run.exists()


@pytest.mark.slow
def test_disk_full_while_writing_a_checkpoint(tmp_path, tiny, monkeypatch):
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    run = tmp_path / "run"
    _old_run(run)
    before = snapshot(run)

    def full(self, checkpoint, path, storage_options=None):
        Path(path).write_bytes(b"half a checkp")  # the temp file is half written, then the disk fills
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", full)
    res = cli(["train", "--dataset", "folder", "--root", str(tiny), "-o", str(run), "--overwrite", "--max-epochs", "1", *TINY])
    assert_one_line_refusal(res, "cannot write checkpoint", "no space left", "intact")
    after = snapshot(run)
    assert after["last.ckpt"] == before["last.ckpt"]
    assert not [p for p in run.iterdir() if ".part" in p.name]


# ------------------------------------------------------------------ label encodings that cannot lie
BUILDING = (255, 48, 48)  # the bundled folder config's building colour (#ff3030); background is black
RED = (255, 0, 0)  # #ff0000: what a user's masks paint instead


def colour_folder(root: Path, building: tuple[int, int, int] = BUILDING, stray: tuple[int, int, int] | None = None,
                  n: int = 4) -> Path:
    """``n`` RGB tiles with colour masks: building (``building``) in the left half, background
    (black) in the right half, optionally a 4-row stripe of ``stray`` across the top."""
    rng = np.random.default_rng(1)
    for i in range(n):
        write_raster(root / "images" / f"t{i}.tif", rng.integers(0, 255, (3, 64, 64), dtype=np.uint8))
        rgb = np.zeros((3, 64, 64), np.uint8)
        rgb[:, :, :32] = np.array(building, np.uint8)[:, None, None]
        if stray is not None:
            rgb[:, :4, :] = np.array(stray, np.uint8)[:, None, None]
        write_raster(root / "masks" / f"t{i}.tif", rgb)
    return root


def _palette_mismatch(root: Path) -> tuple[list[str], tuple[str, ...]]:
    """Masks paint building #ff0000, the config says #ff3030: every building pixel would be ignored."""
    colour_folder(root, building=RED)
    return [], ("building (#ff3030)", "#ff0000 ", "nearest class colour #ff3030 building, 48 off", "--allow-ignored")


def _anti_aliased_masks(root: Path) -> tuple[list[str], tuple[str, ...]]:
    """Building painted a few levels off its colour (anti-aliasing, JPEG): refused with exact matching."""
    colour_folder(root, building=(250, 54, 44))
    return [], ("building (#ff3030)", "#fa362c ", "6 off", "dataset.color_tolerance")


def _index_encoding_on_rgb_masks(root: Path) -> tuple[list[str], tuple[str, ...]]:
    """RGB masks read as indices: band 1 alone (255 = ignore for building) would be the labels."""
    colour_folder(root)
    return ["dataset.mask_encoding=index"], ("has 3 bands", "dataset.mask_encoding is index", "color")


def _mostly_ignored(root: Path) -> tuple[list[str], tuple[str, ...]]:
    """Index masks whose ignore value (255) covers 75 % of the pixels with image data."""
    make_folder(root)
    for i in range(4):
        labels = np.full((64, 64), 255, np.uint8)
        labels[:16, :] = 1
        write_raster(root / "masks" / f"t{i}.tif", labels)
    return [], ("75.0 % of the training pixels", "carry no label", "--allow-ignored")


def _tolerance_above_255(root: Path) -> tuple[list[str], tuple[str, ...]]:
    colour_folder(root)
    return ["dataset.color_tolerance=300"], ("dataset.color_tolerance", "0-255")


def _tolerance_joins_two_classes(root: Path) -> tuple[list[str], tuple[str, ...]]:
    colour_folder(root)
    return ["dataset.colors=['#000000','#100000']", "dataset.color_tolerance=8"], (
        "#000000 and #100000", "use at most 7")


LABEL_CASES: list[tuple[str, Callable[[Path], tuple[list[str], tuple[str, ...]]]]] = [
    ("palette-does-not-match-the-masks", _palette_mismatch),
    ("anti-aliased-masks-without-tolerance", _anti_aliased_masks),
    ("index-encoding-on-rgb-masks", _index_encoding_on_rgb_masks),
    ("most-pixels-ignored", _mostly_ignored),
    ("colour-tolerance-above-255", _tolerance_above_255),
    ("colour-tolerance-joins-two-classes", _tolerance_joins_two_classes),
]


@pytest.mark.parametrize(("case", "spoil"), LABEL_CASES, ids=[c for c, _ in LABEL_CASES])
def test_labels_that_would_train_silently_wrong_are_refused(tmp_path, case, spoil):
    root = tmp_path / "data"
    overrides, fragments = spoil(root)
    data_before = snapshot(root)
    run = tmp_path / "run"
    res = cli(["train", "--dataset", "folder", "--root", str(root), "--max-epochs", "1", "-o", str(run), *TINY,
               *overrides])
    assert_one_line_refusal(res, *fragments)
    assert not run.exists() and snapshot(root) == data_before


def test_stats_names_the_unmatched_colours_and_the_ignored_share(tmp_path):
    root = colour_folder(tmp_path / "data", building=RED)
    out = tmp_path / "stats.json"
    res = cli(["stats", "--root", str(root), "-o", str(out)])
    assert res.exit_code == 0, res.output  # stats describes; train refuses
    text = " ".join(res.output.split())
    assert "#ff0000 " in text and "nearest class colour #ff3030 building" in text
    assert "ignored: 50.00 % of the pixels with image data carry no label" in text
    stats = json.loads(out.read_text())
    assert stats["unknown_colors"] == {"#ff0000": stats["unknown_color_pixels"]} and stats["ignored_share"] == 0.5


def test_index_encoding_on_rgb_masks_is_refused_by_stats_too(tmp_path):
    root = colour_folder(tmp_path / "data")
    res = cli(["stats", "--root", str(root), "dataset.mask_encoding=index"])
    assert_one_line_refusal(res, "dataset.mask_encoding is index")


def test_colour_tolerance_reads_anti_aliased_masks(tmp_path):
    root = colour_folder(tmp_path / "data", building=(250, 54, 44))
    out = tmp_path / "stats.json"
    res = cli(["stats", "--root", str(root), "--split", "train", "-o", str(out), "dataset.color_tolerance=8"])
    assert res.exit_code == 0, res.output
    stats = json.loads(out.read_text())
    assert stats["unknown_color_pixels"] == 0 and stats["pixel_counts"][0] == stats["pixel_counts"][1] > 0
    res = cli(["stats", "--root", str(root), "--split", "train", "-o", str(out), "--overwrite", "dataset.color_tolerance=5"])
    assert json.loads(out.read_text())["pixel_counts"][1] == 0  # 6 levels off is beyond a tolerance of 5


@pytest.mark.slow
def test_train_reports_the_ignored_share_and_allow_ignored_overrides(tmp_path):
    # a stray stripe among matching colours: trains, and says how much is ignored and in which colour
    root = colour_folder(tmp_path / "stripe", stray=(12, 34, 56))
    res = cli(["train", "--dataset", "folder", "--root", str(root), "--max-epochs", "1", "-o", str(tmp_path / "r1"), *TINY])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "labels: 6.25 % of the pixels with image data carry no label" in text and "#0c2238 " in text
    # the palette mismatch trains only when asked to, and still says what it ignores
    root = colour_folder(tmp_path / "mismatch", building=RED)
    res = cli(["train", "--dataset", "folder", "--root", str(root), "--max-epochs", "1", "-o", str(tmp_path / "r2"), *TINY,
               "--allow-ignored"])
    assert res.exit_code == 0, res.output
    assert "labels: 50.00 %" in " ".join(res.output.split()) and (tmp_path / "r2" / "last.ckpt").is_file()
