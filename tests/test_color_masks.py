"""Colour-coded masks in the ``folder`` dataset (one RGB colour per class, as ISPRS ships them),
with JPEG images of different sizes and no georeferencing.

The sample is real: LoveDA tiles from ``../shared/data/loveda`` with their index masks encoded as
colour PNGs through the LoveDA palette, built in a temporary folder inside the test (LoveDA's
licence is non-commercial, so none of it is committed).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from rsseg.cli.main import main
from rsseg.config import hex_rgb
from rsseg.data.datasets import stats_for_path
from rsseg.data.datasets.folder import Folder
from rsseg.data.datasets.isprs import ISPRS_RGB, decode_isprs
from rsseg.data.datasets.loveda import LoveDA, decode_loveda
from rsseg.data.raster import code_hex, decode_codes, decode_colors, rgb_codes
from rsseg.errors import LabelError
from rsseg.runconfig import training_config

#: a colour in no class of the LoveDA palette, painted into one mask to check it is ignored and counted
STRAY = (12, 34, 56)
#: (source tile, top, left, height, width): crops of different sizes
CROPS = [(0, 0, 0, 96, 128), (1, 200, 300, 112, 80), (2, 500, 100, 128, 128), (0, 600, 600, 72, 104)]


def _build(shared: Path, dest: Path) -> dict:
    """Write images/*.jpg + masks/*.png under ``dest``; return the expected class counts."""
    src = shared / "loveda"
    palette = np.array([hex_rgb(c) for c in LoveDA.colors], dtype=np.uint8)
    (dest / "images").mkdir(parents=True)
    (dest / "masks").mkdir()
    counts = np.zeros(len(LoveDA.classes), dtype=np.int64)
    unknown = 0
    for i, (tile, top, left, h, w) in enumerate(CROPS):
        image = np.asarray(Image.open(src / "images_png" / f"{tile}.png").convert("RGB"))[top:top + h, left:left + w]
        raw = np.asarray(Image.open(src / "masks_png" / f"{tile}.png"))[top:top + h, left:left + w]
        labels = decode_loveda(raw, "test", 255)
        rgb = np.zeros((h, w, 3), dtype=np.uint8)  # LoveDA no-data -> black, a colour of no class
        known = labels != 255
        rgb[known] = palette[labels[known]]
        if i == 1:
            rgb[:10, :20] = STRAY
            labels = labels.copy()
            labels[:10, :20] = 255
        unknown += int((labels == 255).sum())
        counts += np.bincount(labels[labels != 255], minlength=len(counts))
        Image.fromarray(image).save(dest / "images" / f"t{i}.jpg", quality=92)
        Image.fromarray(rgb).save(dest / "masks" / f"t{i}.png")
    return {"counts": counts, "unknown": unknown}


@pytest.fixture(scope="module")
def color_folder(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("colour_masks") / "data"
    expected = _build(shared_data, root)
    cfg = {"dataset": {"name": "folder", "root": str(root), "classes": list(LoveDA.classes),
                       "colors": list(LoveDA.colors), "val_fraction": 0.25}}
    config = root.parent / "colour.yaml"
    config.write_text(yaml.safe_dump(cfg))
    return root, config, expected


def test_decode_colors_is_an_exact_match_and_isprs_reuses_it():
    rgb = np.array([[[255, 254, 0]], [[0, 0, 0]], [[0, 0, 255]]], dtype=np.uint8)  # [3, 1, 3]
    out = decode_colors(rgb, [(255, 0, 0), (0, 0, 255)], 255)
    assert out.tolist() == [[0, 255, 1]]  # (254, 0, 0) is not (255, 0, 0): exact match only
    # ISPRS snaps each channel to 0/255 first, then goes through the same table lookup
    isprs = np.array(ISPRS_RGB, dtype=np.uint8).T[:, None, :] - np.uint8(3)  # off by a little
    isprs = np.where(np.array(ISPRS_RGB).T[:, None, :] == 0, 0, isprs).astype(np.uint8)
    assert decode_isprs(isprs, 255).tolist() == [list(range(6))]
    assert decode_isprs(np.zeros((3, 1, 1), np.uint8), 255).tolist() == [[255]]  # black boundary


def test_a_colour_tolerance_matches_each_channel_within_it():
    rgb = np.array([[[250, 200, 5]], [[3, 0, 0]], [[4, 0, 250]]], dtype=np.uint8)  # (250,3,4) (200,0,0) (5,0,250)
    codes = rgb_codes(rgb)
    assert [code_hex(c) for c in codes.ravel()] == ["#fa0304", "#c80000", "#0500fa"]
    colours = [(255, 0, 0), (0, 0, 255)]
    assert decode_codes(codes, colours, 255, tolerance=5).tolist() == [[0, 255, 1]]
    assert decode_codes(codes, colours, 255, tolerance=4).tolist() == [[255, 255, 255]]  # 5 levels off in one channel
    assert decode_codes(codes, colours, 255).tolist() == [[255, 255, 255]]


def test_colour_masks_are_detected_and_decoded(color_folder):
    root, config, expected = color_folder
    cfg = training_config(str(config))
    pairs = Folder().pairs(cfg.dataset, "train") + Folder().pairs(cfg.dataset, "val")
    assert {(p.height, p.width) for p in pairs} == {(h, w) for _, _, _, h, w in CROPS}
    assert all(p.label_colors == tuple(hex_rgb(c) for c in LoveDA.colors) for p in pairs)
    # index encoding asked for on RGB masks: refused, band 1 alone holds no class index
    cfg.dataset.mask_encoding = "index"
    with pytest.raises(LabelError, match="dataset.mask_encoding is index"):
        Folder().pairs(cfg.dataset, "train")


def test_stats_count_classes_and_unknown_colours(color_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("RSSEG_CACHE_DIR", str(tmp_path / "cache"))
    root, config, expected = color_folder
    cfg = training_config(str(config))
    train = stats_for_path(root, cfg, "train", use_cache=False)
    val = stats_for_path(root, cfg, "val", use_cache=False)
    assert train.num_images + val.num_images == len(CROPS)
    assert (np.array(train.pixel_counts) + val.pixel_counts).tolist() == expected["counts"].tolist()
    assert train.unknown_color_pixels + val.unknown_color_pixels == expected["unknown"] >= 200
    split, part = ("train", train) if train.unknown_color_pixels else ("val", val)
    out = tmp_path / "stats.json"
    res = CliRunner().invoke(main, ["stats", "--root", str(root), "-c", str(config), "--split", split, "-o", str(out), "--no-cache"])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["unknown_color_pixels"] == part.unknown_color_pixels > 0
    assert f"{part.unknown_color_pixels:,} mask pixels have a colour that is no class's" in " ".join(res.output.split())


def test_colour_encoding_on_index_masks_is_a_clear_error(color_folder, tmp_path):
    root, config, _ = color_folder
    index_root = tmp_path / "idx"
    (index_root / "images").mkdir(parents=True)
    (index_root / "masks").mkdir()
    for i in range(2):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(index_root / "images" / f"{i}.png")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(index_root / "masks" / f"{i}.png")
    cfg = training_config(str(config), root=str(index_root), overrides=["dataset.mask_encoding=color"])
    with pytest.raises(LabelError, match="mask_encoding"):
        Folder().pairs(cfg.dataset, "train")


@pytest.mark.slow
def test_train_and_evaluate_on_a_colour_mask_folder(color_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("RSSEG_CACHE_DIR", str(tmp_path / "cache"))
    root, config, _ = color_folder
    run = tmp_path / "run"
    args = ["train", "-c", str(config), "--max-epochs", "1", "-o", str(run), "optim.batch_size=4", "optim.crop_size=64",
            "optim.scales=[1.0]"]
    # these crops hold no water or barren pixel but a stray colour: refused unless the user says so
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and "no training pixel is labelled water (#0000ff), barren" in res.output, res.output
    assert not run.exists()
    res = CliRunner().invoke(main, [*args, "--allow-ignored"])
    assert res.exit_code == 0, res.output
    ckpt = run / "best.ckpt"
    assert ckpt.is_file()
    res = CliRunner().invoke(main, ["evaluate", "-m", str(ckpt), "--split", "val", "--device", "cpu",
                                    "-o", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["classes"] == list(LoveDA.classes)
    assert 0.0 <= report["OA"] <= 1.0 and sum(map(sum, report["confusion_matrix"])) > 0


def test_paletted_masks_decode_through_their_colour_table(shared_data, tmp_path, monkeypatch):
    """``mask_encoding: color`` on single-band PNGs with a colour table whose indices are not the
    class order: the colours decide, not the indices."""
    raw = np.asarray(Image.open(shared_data / "loveda" / "masks_png" / "1.png"))[:64, :80]
    monkeypatch.setenv("RSSEG_CACHE_DIR", str(tmp_path / "cache"))
    labels = decode_loveda(raw, "test", 255)
    labels[:5, :7] = 255  # painted in the stray colour below
    root = tmp_path / "pal"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    k = len(LoveDA.classes)
    slot = {c: (c + 3) % k for c in range(k)}  # class c's colour sits at palette index c + 3
    palette = np.zeros((256, 3), np.uint8)
    for c, i in slot.items():
        palette[i] = hex_rgb(LoveDA.colors[c])
    palette[200] = STRAY
    indices = np.vectorize(lambda v: 200 if v == 255 else slot[int(v)])(labels).astype(np.uint8)
    for i in range(2):
        Image.fromarray(np.zeros((64, 80, 3), np.uint8)).save(root / "images" / f"{i}.png")
        png = Image.fromarray(indices, mode="P")
        png.putpalette(palette.ravel().tolist())
        png.save(root / "masks" / f"{i}.png")
    cfg = training_config(dataset="folder", root=str(root), overrides=[
        f"dataset.classes=[{','.join(LoveDA.classes)}]", f"dataset.colors=[{','.join(repr(c) for c in LoveDA.colors)}]",
        "dataset.mask_encoding=color", "dataset.val_fraction=0.5"])
    stats = stats_for_path(root, cfg, "train", use_cache=False)
    assert stats.pixel_counts == np.bincount(labels[labels != 255], minlength=k).tolist()
    assert stats.unknown_color_pixels == int((labels == 255).sum()) >= 35
