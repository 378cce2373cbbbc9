"""rsseg.data.stats: class/region counts, imbalance factors, band statistics, caching, priors.

Real-data checks compare against numbers computed here directly from the raw files with
rasterio and numpy (sums of squares, a different algorithm from the streaming merge in stats).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest import write_raster

import rsseg.data.stats as stats_mod
from rsseg.data.datasets import stats_for_path
from rsseg.data.stats import DatasetStats, compute_stats, log_region_prior
from rsseg.errors import RsSegError
from rsseg.runconfig import config_from_dict


@pytest.fixture(autouse=True)
def _stats_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RSSEG_CACHE_DIR", str(tmp_path / "cache"))


def _folder_cfg(classes=("background", "building")):
    colors = ["#000000", "#ff0000", "#00ff00", "#0000ff"][: len(classes)]
    return config_from_dict({"dataset": {"name": "folder", "classes": list(classes), "colors": colors}})


def _reference(images: list[Path], num_classes: int):
    """Counts and band moments straight from the files (no ignore/nodata in these sets)."""
    pixels = np.zeros(num_classes, np.int64)
    regions = np.zeros(num_classes, np.int64)
    s1 = s2 = 0.0
    n = 0
    for img in images:
        mask_path = img.parent.parent / "masks" / img.name if img.parent.name == "images" else img.with_name("mask.tif")
        with rasterio.open(img) as src:
            x = src.read().astype(np.float64) / 255.0
        with rasterio.open(mask_path) as src:
            m = src.read(1)
        c = np.bincount(m.ravel(), minlength=num_classes)
        pixels += c
        regions += c > 0
        s1 = s1 + x.sum(axis=(1, 2))
        s2 = s2 + (x**2).sum(axis=(1, 2))
        n += m.size
    mean = s1 / n
    return pixels, regions, mean, np.sqrt(s2 / n - mean**2)


def _check_against_reference(stats: DatasetStats, images: list[Path]) -> None:
    pixels, regions, mean, std = _reference(images, stats.num_classes)
    assert stats.num_images == len(images)
    assert stats.pixel_counts == pixels.tolist() and stats.region_counts == regions.tolist()
    assert np.allclose(stats.mean, mean, atol=1e-9) and np.allclose(stats.std, std, atol=1e-7)
    assert stats.pixel_imbalance == pytest.approx(pixels.max() / pixels[pixels > 0].min())
    assert stats.region_imbalance == pytest.approx(regions.max() / regions[regions > 0].min())


def test_synthetic_counts_imbalance_and_absent_class():
    m1 = np.array([[0, 0, 1], [0, 255, 1]])
    m2 = np.array([[0, 0, 0], [0, 0, 255]])
    img1 = np.stack([np.full((2, 3), 255), np.arange(6).reshape(2, 3)])
    img2 = np.full((2, 2, 3), 51.0)
    s = compute_stats([(img1, m1), {"image": torch.from_numpy(img2), "mask": torch.from_numpy(m2)}], 3, 255, scale=255)
    assert s.pixel_counts == [8, 2, 0] and s.region_counts == [2, 1, 0] and s.num_images == 2
    assert s.ignored_pixels == 2 and s.absent_classes == [2]
    assert s.pixel_imbalance == 4.0 and s.region_imbalance == 2.0  # class 2 (absent) left out
    # band stats exclude the ignored pixels
    vals = np.concatenate([img1[0][m1 != 255], img2[0][m2 != 255]]) / 255
    assert s.mean[0] == pytest.approx(vals.mean()) and s.std[0] == pytest.approx(vals.std())
    empty = compute_stats([(None, np.full((2, 2), 255))], 2)
    assert empty.pixel_imbalance is None and empty.mean == []


def test_json_round_trip_and_bad_labels():
    s = compute_stats([(np.ones((1, 2, 2)), np.array([[0, 1], [1, 1]]))], 2)
    back = DatasetStats.from_json(s.to_json())
    assert back == s and back.pixel_imbalance == 3.0
    with pytest.raises(RsSegError, match=r"\[5\]"):
        compute_stats([(None, np.array([[0, 5]]))], 2)


def test_log_region_prior_smoothed():
    s = DatasetStats(3, 255, [10, 5, 0], [4, 1, 0], 4, [], [])
    prior = log_region_prior(s)
    expect = torch.log(torch.tensor([5.0, 2.0, 1.0]) / 8.0)
    assert prior.shape == (3,) and torch.isfinite(prior).all() and torch.allclose(prior, expect)


def test_kampala_train_split_matches_raw_files(shared_data):
    root = shared_data / "oam_kampala"
    stats = stats_for_path(root, _folder_cfg())
    _check_against_reference(stats, sorted((root / "train" / "images").glob("*.tif")))


def test_sample_tiles(sample_tiles):
    train = sample_tiles / "train" / "images"
    if not train.is_dir():
        pytest.skip("sample_tiles/train not created yet")
    _check_against_reference(stats_for_path(sample_tiles, _folder_cfg()), sorted(train.glob("*.tif")))
    tanzania = sample_tiles / "tanzania"
    if (tanzania / "image.tif").is_file():
        _check_against_reference(stats_for_path(tanzania, _folder_cfg()), [tanzania / "image.tif"])


def test_cache_reused_and_invalidated(tmp_path, monkeypatch):
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for i in range(3):
        write_raster(root / "images" / f"{i}.tif", rng.integers(0, 256, (3, 16, 16), dtype=np.uint8))
        write_raster(root / "masks" / f"{i}.tif", rng.integers(0, 3, (16, 16), dtype=np.uint8))
    cfg = _folder_cfg(("a", "b", "c"))
    first = stats_for_path(root, cfg)
    assert list((tmp_path / "cache").glob("stats_data_*.json"))  # cached in the user cache dir
    assert not list(root.glob(".rsseg*"))  # never inside the data folder

    def boom(*a, **k):
        raise AssertionError("recomputed despite a valid cache")

    monkeypatch.setattr(stats_mod, "stats_of_pairs", boom)
    assert stats_for_path(root, cfg) == first
    monkeypatch.undo()
    monkeypatch.setenv("RSSEG_CACHE_DIR", str(tmp_path / "cache"))
    # changing a training file (size/mtime) invalidates the cache
    from rsseg.data.datasets import holdout

    train_idx = [i for i in range(3) if i not in holdout(3, cfg.dataset.val_fraction)]
    write_raster(root / "masks" / f"{train_idx[0]}.tif", np.zeros((16, 16), np.uint8))
    again = stats_for_path(root, cfg)
    assert again != first and again.pixel_counts[0] > first.pixel_counts[0]
    assert math.isclose(sum(again.pixel_counts), sum(first.pixel_counts))


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(RsSegError, match="does not exist"):
        stats_for_path(tmp_path / "nope", _folder_cfg())


def test_progress_goes_through_on_progress_and_nothing_is_printed(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RSSEG_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "data"
    rng = np.random.default_rng(1)
    for i in range(4):
        write_raster(root / "train" / "images" / f"{i}.tif", rng.integers(0, 256, (3, 8, 8), dtype=np.uint8))
        write_raster(root / "train" / "masks" / f"{i}.tif", rng.integers(0, 2, (8, 8), dtype=np.uint8))
    calls: list[tuple[int, int]] = []
    stats = stats_for_path(root, _folder_cfg(("a", "b")), on_progress=lambda done, total: calls.append((done, total)))
    assert stats.num_images == 4 and calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    calls.clear()
    stats_for_path(root, _folder_cfg(("a", "b")), on_progress=lambda done, total: calls.append((done, total)))
    assert calls == []  # served from the cache: nothing computed, nothing reported
    seen: list[tuple[int, int]] = []
    compute_stats(iter([(None, np.zeros((2, 2)))] * 2), 2, on_progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 0), (2, 0)]  # total unknown for a plain iterator
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
