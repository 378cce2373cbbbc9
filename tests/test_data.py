"""rsseg.data: dataset layouts and label mapping, held-out validation, batch augmentation."""

from __future__ import annotations

import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import torch
from conftest import tif_bytes, write_raster
from PIL import Image

from rsseg.data import augment_batch, build_datamodule, dataset_names, get_dataset
from rsseg.data.datasets.isprs import ISPRS_RGB
from rsseg.data.normalize import IMAGENET_MEAN
from rsseg.errors import ConfigError, DatasetNotFoundError, RsSegError
from rsseg.runconfig import config_from_dict


@pytest.fixture(autouse=True)
def _stats_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RSSEG_CACHE_DIR", str(tmp_path / "cache"))


def _cfg(name: str, root: Path, **ds):
    return config_from_dict({"dataset": {"name": name, "root": str(root), **ds},
                             "optim": {"batch_size": 2, "crop_size": 32}})


# --------------------------------------------------------------------------------------- dataset specs
def test_dataset_specs():
    lv = get_dataset("loveda")
    assert lv.classes == ("background", "building", "road", "water", "barren", "forest", "agriculture")
    # LoveDA's reference palette: barren is (159, 129, 183), agriculture (255, 195, 128)
    assert len(lv.colors) == 7 and lv.colors[1] == "#ff0000" and lv.colors[4] == "#9f81b7" and lv.colors[6] == "#ffc380"
    isprs = get_dataset("potsdam")
    assert isprs.classes[0] == "impervious surfaces" and isprs.classes[2] == "low vegetation" and isprs.classes[5] == "clutter"
    assert isprs.colors == ("#ffffff", "#0000ff", "#00ffff", "#00ff00", "#ffff00", "#ff0000")
    assert get_dataset("vaihingen").bands == ("nir", "red", "green")
    assert get_dataset("folder").classes == ()  # from the config
    with pytest.raises(ConfigError, match="loveda"):
        get_dataset("nope")


def test_registry_is_the_one_list_of_datasets():
    from rsseg.data.datasets import DatasetSpec, dataset_names, register_dataset

    assert set(dataset_names()) >= {"loveda", "potsdam", "vaihingen", "folder"}
    with pytest.raises(ConfigError, match="dataset.name"):
        config_from_dict({"dataset": {"name": "nope"}})
    with pytest.raises(ValueError, match="twice"):

        @register_dataset
        class Again(DatasetSpec):
            name = "loveda"


@pytest.mark.parametrize("name", dataset_names())
def test_bundled_configs_agree_with_the_spec(name):
    """Every shipped configs/<dataset>/*.yaml resolves to its spec's classes, colours, bands and gsd:
    the YAMLs cannot drift from the spec (they only name the dataset)."""
    from rsseg.data import resolve_dataset_config
    from rsseg.runconfig import bundled_config, load_config

    spec = get_dataset(name)
    yamls = sorted(bundled_config(name).parent.glob("*.yaml"))
    assert len(yamls) >= 2
    for path in yamls:
        ds = resolve_dataset_config(load_config(path).dataset)
        assert ds.name == name, path
        if spec.classes:
            assert (tuple(ds.classes), tuple(ds.colors), tuple(ds.bands), ds.gsd) == (
                spec.classes, spec.colors, spec.bands, spec.gsd), path


def test_errors_subclass_builtins(tmp_path):
    with pytest.raises(FileNotFoundError, match="zenodo"):
        build_datamodule(_cfg("loveda", tmp_path / "absent")).pairs("train")
    with pytest.raises(ValueError, match="dataset.bands"):
        build_datamodule(_cfg("potsdam", tmp_path, bands=["red", "swir"]))
    assert issubclass(DatasetNotFoundError, RsSegError) and issubclass(ConfigError, RsSegError)


def test_datamodule_and_predictor_normalise_identically(tmp_path):
    """One normalisation for training and inference: a tile the datamodule serves equals what the
    predictor feeds the model for the same raw pixels (custom stats, 4 bands, uint16)."""
    from rsseg.checkpoint import ModelMeta
    from rsseg.inference import Predictor

    rng = np.random.default_rng(5)
    for i in range(2):
        write_raster(tmp_path / "images" / f"t{i}.tif", rng.integers(0, 4096, (4, 24, 40), dtype=np.uint16))
        write_raster(tmp_path / "masks" / f"t{i}.tif", rng.integers(0, 2, (24, 40), dtype=np.uint8))
    mean, std = [0.11, 0.2, 0.33, 0.4], [0.05, 0.1, 0.15, 0.21]
    dm = build_datamodule(_cfg("folder", tmp_path, bands=["b", "g", "r", "n"], normalization="custom",
                               mean=mean, std=std, scale=4095.0))
    meta = ModelMeta(classes=dm.classes, colors=dm.colors, bands=dm.bands, mean=dm.mean, std=dm.std, scale=dm.scale)
    predictor = Predictor.from_model(torch.nn.Conv2d(4, 2, 1), meta, tile=64, overlap=16, batch=1, tta="none", device="cpu")
    for tile in dm.eval_tiles("val"):
        with rasterio.open(tmp_path / "images" / f"{tile['name']}.tif") as src:
            raw = src.read()
        x = predictor.normalise(raw)
        assert x.dtype == np.float32 and np.array_equal(tile["image"].numpy(), x)
        expect = (raw / 4095.0 - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
        assert np.allclose(x, expect, atol=1e-5)


# --------------------------------------------------------------------------------------- LoveDA
def _loveda(root: Path, bad_value: int | None = None) -> dict[str, np.ndarray]:
    """Tiny LoveDA tree: Train/{Urban,Rural} 2 tiles each, Val/{Urban,Rural} 1 each, raw masks 0..7."""
    rng = np.random.default_rng(0)
    raw = {}
    for split, n in (("Train", 2), ("Val", 1)):
        for scene in ("Urban", "Rural"):
            for i in range(n):
                name = f"{scene[0]}{i}"
                img = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
                msk = rng.integers(0, 8, (24, 24), dtype=np.uint8)
                if bad_value is not None:
                    msk[0, 0] = bad_value
                for sub, arr in (("images_png", img), ("masks_png", msk)):
                    (root / split / scene / sub).mkdir(parents=True, exist_ok=True)
                    Image.fromarray(arr).save(root / split / scene / sub / f"{name}.png")
                raw[f"{split}/{scene.lower()}/{name}"] = msk
    return raw


def test_loveda_label_mapping_and_scene_filter(tmp_path):
    raw = _loveda(tmp_path)
    dm = build_datamodule(_cfg("loveda", tmp_path))
    assert dm.classes == list(get_dataset("loveda").classes) and dm.num_classes == 7
    assert len(dm.pairs("train")) == 4 and len(dm.pairs("val")) == 2
    tiles = list(dm.eval_tiles("val"))
    assert {t["name"] for t in tiles} == {"urban/U0", "rural/R0"}
    for t in tiles:
        src = raw[f"Val/{t['name']}"]
        expect = np.where(src == 0, 255, src.astype(np.int64) - 1)
        assert t["mask"].dtype == torch.int64 and np.array_equal(t["mask"].numpy(), expect)
        assert t["image"].shape == (3, 24, 24) and t["image"].dtype == torch.float32
    urban = build_datamodule(_cfg("loveda", tmp_path, scene="urban"))
    assert [p.name for p in urban.pairs("train")] == ["urban/U0", "urban/U1"]


def test_loveda_bad_mask_value_names_file(tmp_path):
    _loveda(tmp_path, bad_value=9)
    dm = build_datamodule(_cfg("loveda", tmp_path))
    with pytest.raises(RsSegError, match=r"masks_png.*\[9\]"):
        next(iter(dm.eval_tiles("val")))


def test_loveda_missing_root_names_layout(tmp_path):
    with pytest.raises(RsSegError, match="zenodo"):
        build_datamodule(_cfg("loveda", tmp_path)).pairs("train")


def test_real_loveda_tiles(shared_data, tmp_path):
    """The three real tiles: raw 1..7 -> 0..6, no no-data, no barren (raw 5)."""
    src = shared_data / "loveda"
    for sub in ("images_png", "masks_png"):
        d = tmp_path / "Val" / "Urban" / sub
        d.mkdir(parents=True)
        for i in range(3):
            (d / f"{i}.png").symlink_to(src / sub / f"{i}.png")
    dm = build_datamodule(_cfg("loveda", tmp_path, scene="urban"))
    seen = set()
    for t in dm.eval_tiles("val"):
        raw = np.array(Image.open(src / "masks_png" / f"{t['name'].split('/')[1]}.png"))
        mask = t["mask"].numpy()
        assert mask.shape == (1024, 1024) and np.array_equal(mask, raw.astype(np.int64) - 1)
        seen |= set(np.unique(mask).tolist())
        rgb = np.array(Image.open(src / "images_png" / f"{t['name'].split('/')[1]}.png").convert("RGB"))
        expect = (rgb[..., 0] / 255.0 - IMAGENET_MEAN[0]) / 0.229
        assert np.allclose(t["image"][0].numpy(), expect, atol=1e-5)
    assert 255 not in seen and 4 not in seen and seen <= set(range(7))
    assert {0, 1, 2, 3, 5, 6} <= seen


# --------------------------------------------------------------------------------------- ISPRS
POTSDAM_TRAIN = ["top_potsdam_2_10", "top_potsdam_2_11", "top_potsdam_3_10", "top_potsdam_3_11"]
POTSDAM_TEST = ["top_potsdam_2_13"]


def _isprs_label(rng) -> np.ndarray:
    """Random ISPRS colours ``[3,H,W]`` with a black and a near-red pixel planted."""
    idx = rng.integers(0, 6, (32, 32))
    rgb = np.array(ISPRS_RGB, dtype=np.uint8)[idx].transpose(2, 0, 1).copy()
    rgb[:, 0, 0] = (0, 0, 0)  # not a class colour -> ignore
    rgb[:, 0, 1] = (250, 3, 4)  # clutter with a little noise -> clutter
    idx[0, 0], idx[0, 1] = 255, 5
    return rgb, idx


def _potsdam(root: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    labels = {}
    with zipfile.ZipFile(root / "4_Ortho_RGBIR.zip", "w") as zi, \
         zipfile.ZipFile(root / "5_Labels_all.zip", "w") as zl, \
         zipfile.ZipFile(root / "5_Labels_all_noBoundary.zip", "w") as ze:
        for k, tile in enumerate(POTSDAM_TRAIN + POTSDAM_TEST):
            # band b holds 10*(b+1) + tile number: band order is visible in the data
            img = np.stack([np.full((32, 32), 10 * (b + 1) + k, np.uint8) for b in range(4)])
            zi.writestr(f"4_Ortho_RGBIR/{tile}_RGBIR.tif", tif_bytes(root, img))
            zi.writestr(f"4_Ortho_RGBIR/{tile}_RGBIR.tfw", "0.05\n0\n0\n-0.05\n0\n0\n")
            rgb, idx = _isprs_label(rng)
            zl.writestr(f"{tile}_label.tif", tif_bytes(root, rgb))
            eroded = rgb.copy()
            eroded[:, 5, :] = 0  # a boundary row
            ze.writestr(f"{tile}_label_noBoundary.tif", tif_bytes(root, eroded))
            labels[tile] = idx
    return labels


def test_potsdam_zips_labels_bands_holdout(tmp_path):
    labels = _potsdam(tmp_path)
    dm = build_datamodule(_cfg("potsdam", tmp_path, bands=["nir", "red", "green"], normalization="custom",
                               mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0], scale=1.0, val_fraction=0.25))
    train, val = dm.pairs("train"), dm.pairs("val")
    names_train, names_val = {p.name for p in train}, {p.name for p in val}
    assert len(names_val) == 1 and names_train | names_val == set(POTSDAM_TRAIN) and not names_train & names_val
    assert [p.name for p in dm.pairs("test")] == POTSDAM_TEST
    assert [p.name for p in build_datamodule(dm.cfg).pairs("val")] == [p.name for p in val]  # deterministic
    for t in dm.eval_tiles("val"):
        k = (POTSDAM_TRAIN + POTSDAM_TEST).index(t["name"])
        assert t["image"][:, 0, 0].tolist() == [40 + k, 10 + k, 20 + k]  # nir, red, green
        assert np.array_equal(t["mask"].numpy(), labels[t["name"]])
    # eroded labels for evaluation: the boundary row is ignored, training labels are not eroded
    eroded = build_datamodule(_cfg("potsdam", tmp_path, eroded_labels=True, val_fraction=0.25))
    tile = next(iter(eroded.eval_tiles("test")))
    assert (tile["mask"][5] == 255).all()
    assert np.array_equal(tile["mask"][6:].numpy(), labels[POTSDAM_TEST[0]][6:])
    assert "noBoundary" not in eroded.pairs("train")[0].mask


def test_potsdam_unknown_band_and_missing_data(tmp_path):
    with pytest.raises(RsSegError, match="isprs"):
        build_datamodule(_cfg("potsdam", tmp_path)).pairs("train")
    with pytest.raises(RsSegError, match="bands"):
        build_datamodule(_cfg("potsdam", tmp_path, bands=["red", "swir"]))


def test_vaihingen_zips_irrg(tmp_path):
    rng = np.random.default_rng(2)
    tiles = ["top_mosaic_09cm_area1", "top_mosaic_09cm_area3", "top_mosaic_09cm_area6"]
    labels = {}
    with zipfile.ZipFile(tmp_path / "ISPRS_semantic_labeling_Vaihingen.zip", "w") as zi, \
         zipfile.ZipFile(tmp_path / "ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE.zip", "w") as zl:
        for tile in tiles:
            img = np.stack([np.full((32, 32), v, np.uint8) for v in (200, 100, 50)])  # IR, R, G
            zi.writestr(f"top/{tile}.tif", tif_bytes(tmp_path, img))
            zi.writestr(f"dsm/dsm_09cm_matching_{tile[15:]}.tif", tif_bytes(tmp_path, img[:1]))
            rgb, idx = _isprs_label(rng)
            zl.writestr(f"{tile}.tif", tif_bytes(tmp_path, rgb))
            labels[tile] = idx
    dm = build_datamodule(_cfg("vaihingen", tmp_path))
    assert dm.bands == ["nir", "red", "green"] and dm.gsd == 0.09
    assert {p.name for p in dm.pairs("train")} | {p.name for p in dm.pairs("val")} == set(tiles[:2])
    (t,) = list(dm.eval_tiles("test"))
    assert t["name"] == "top_mosaic_09cm_area6" and np.array_equal(t["mask"].numpy(), labels[t["name"]])
    expect = [(v / 255 - m) / s for v, m, s in zip((200, 100, 50), IMAGENET_MEAN, (0.229, 0.224, 0.225))]
    assert np.allclose(t["image"][:, 3, 3].numpy(), expect, atol=1e-5)
    # extracted as TorchGeo leaves it: images in top/, labels (same file names) in the root
    out = tmp_path / "extracted"
    for z in tmp_path.glob("*.zip"):
        zipfile.ZipFile(z).extractall(out)
    ext = build_datamodule(_cfg("vaihingen", out))
    (p,) = ext.pairs("test")
    assert p.image == str(out / "top" / "top_mosaic_09cm_area6.tif") and p.mask == str(out / "top_mosaic_09cm_area6.tif")
    assert np.array_equal(next(iter(ext.eval_tiles("test")))["mask"].numpy(), labels[t["name"]])


# --------------------------------------------------------------------------------------- folders
def _folder(root: Path, sizes=((40, 50), (70, 90), (30, 30)), nodata_first=True) -> None:
    rng = np.random.default_rng(3)
    for i, (h, w) in enumerate(sizes):
        img = rng.integers(1, 256, (3, h, w), dtype=np.uint8)
        msk = rng.integers(0, 2, (h, w), dtype=np.uint8)
        if i == 0 and nodata_first:
            img[:, :5, :] = 0
        write_raster(root / "images" / f"t{i}.tif", img, nodata=0)
        write_raster(root / "masks" / f"t{i}.tif", msk)


def test_folder_mixed_sizes_collate_nodata_and_holdout(tmp_path):
    _folder(tmp_path)
    dm = build_datamodule(_cfg("folder", tmp_path, val_fraction=0.3))
    assert len(dm.pairs("val")) == 1 and len(dm.pairs("train")) == 2
    assert dm.patch_size == 64  # crop 32 / min scale 0.5, capped by the largest tile (90) and rounded to 32
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 64, 64) and batch["mask"].shape == (2, 64, 64)
    tiles = {t["name"]: t for t in build_datamodule(_cfg("folder", tmp_path, val_fraction=0.3)).eval_tiles("val")}
    all_tiles = [*tiles.values()]
    assert all_tiles and all(t["mask"].dtype == torch.int64 for t in all_tiles)
    # nodata rows of t0 are ignored wherever t0 lands
    dm_all = build_datamodule(_cfg("folder", tmp_path, val_fraction=0.3))
    t0 = next(p for p in dm_all.pairs("train") + dm_all.pairs("val") if p.name == "t0")
    from rsseg.data.tiles import read_pair

    _, mask = read_pair(t0, 2, 255)
    assert (mask[:5] == 255).all() and (mask[5:] != 255).all()


def test_folder_errors_name_files(tmp_path):
    _folder(tmp_path, sizes=((20, 20), (20, 20)))
    write_raster(tmp_path / "masks" / "t1.tif", np.zeros((20, 21), np.uint8))
    with pytest.raises(RsSegError, match=r"images/t1.tif.*masks/t1.tif"):
        build_datamodule(_cfg("folder", tmp_path)).pairs("train")
    write_raster(tmp_path / "masks" / "t1.tif", np.zeros((20, 20), np.uint8), crs="EPSG:4326")
    with pytest.raises(RsSegError, match=r"CRS"):
        build_datamodule(_cfg("folder", tmp_path)).pairs("train")
    write_raster(tmp_path / "masks" / "t1.tif", np.full((20, 20), 7, np.uint8))
    dm = build_datamodule(_cfg("folder", tmp_path, val_fraction=0.5))
    with pytest.raises(RsSegError, match=r"masks/t1.tif.*\[7\]"):
        list(dm.eval_tiles("train")) + list(dm.eval_tiles("val"))
    with pytest.raises(RsSegError, match="images"):
        build_datamodule(_cfg("folder", tmp_path / "nope")).pairs("train")


def test_folder_trains_on_kampala(shared_data):
    """The oam_kampala train/val layout through a real Lightning fit step (augmentation on transfer)."""
    import lightning as L

    dm = build_datamodule(_cfg("folder", shared_data / "oam_kampala"))
    seen = {}

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 1)

        def training_step(self, batch, _):
            seen["train"] = (batch["image"].shape, batch["mask"].dtype)
            return torch.nn.functional.cross_entropy(self.conv(batch["image"]), batch["mask"], ignore_index=255)

        def validation_step(self, batch, _):
            seen["val"] = batch["image"].shape

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = L.Trainer(fast_dev_run=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(Tiny(), datamodule=dm)
    assert seen["train"] == (torch.Size([2, 3, 32, 32]), torch.int64)
    assert seen["val"] == torch.Size([2, 3, 64, 64])  # grid windows of patch_size = crop / min(scales)
    assert len(dm.pairs("val")) == 29 and len(dm.pairs("train")) == 118
    assert len(dm.val_dataset) == 29 * 16 and len(dm.train_dataset) == 118 * 16


def test_sample_tiles_layout(sample_tiles):
    if not (sample_tiles / "train" / "images").is_dir():
        pytest.skip("sample_tiles/train not created yet")
    dm = build_datamodule(_cfg("folder", sample_tiles))
    assert len(dm.pairs("train")) == len(list((sample_tiles / "train" / "images").iterdir()))
    batch = dm.augment(next(iter(dm.train_dataloader())))
    assert batch["image"].shape[-2:] == (32, 32) and set(batch["mask"].unique().tolist()) <= {0, 1, 255}


def test_normalization_modes(tmp_path):
    _folder(tmp_path, sizes=((20, 20), (20, 20)), nodata_first=False)
    four = build_datamodule(_cfg("folder", tmp_path, bands=["red", "green", "blue", "nir"]))
    assert four.mean == [*IMAGENET_MEAN, 0.5] and four.std[3] == 0.25
    custom = build_datamodule(_cfg("folder", tmp_path, normalization="custom", mean=[0.1, 0.2, 0.3], std=[1, 2, 3]))
    assert custom.mean == [0.1, 0.2, 0.3] and custom.std == [1.0, 2.0, 3.0]
    stats = build_datamodule(_cfg("folder", tmp_path, normalization="stats"))
    assert stats.mean == stats.stats.mean and all(0 < s < 1 for s in stats.std)


# --------------------------------------------------------------------------------------- augmentation
def _coordinate_batch(b: int, size: int):
    """Image channels = row and column index, mask = a function of (row, col)."""
    r, c = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    image = torch.stack([r, c]).float()[None].repeat(b, 1, 1, 1)
    mask = ((r // 3 + 2 * (c // 5)) % 7)[None].repeat(b, 1, 1)
    return image, mask


@pytest.mark.parametrize("scales", [(0.5, 0.75, 1.0, 1.25, 1.5), (1.0,), (0.6, 1.7)])
def test_augmentation_moves_image_and_mask_together(scales):
    image, mask = _coordinate_batch(8, 64)
    gen = torch.Generator().manual_seed(0)
    out_i, out_m = augment_batch(image, mask, 48, scales, 255, generator=gen)
    assert out_i.shape == (8, 2, 48, 48) and out_m.shape == (8, 48, 48) and out_m.dtype == torch.int64
    valid = out_m != 255
    assert valid.float().mean() > 0.3
    # Bilinear image samples at a source coordinate, nearest-exact mask takes the pixel whose
    # centre is nearest to it: rounding the image coordinate recovers the mask's source pixel
    # (except exactly half-way between pixels, where floating point may tip either way).
    rr, cc = out_i[:, 0], out_i[:, 1]
    ties = ((rr - rr.floor() - 0.5).abs() < 1e-3) | ((cc - cc.floor() - 0.5).abs() < 1e-3)
    r, c = torch.floor(rr + 0.5).long(), torch.floor(cc + 0.5).long()
    expect = (r // 3 + 2 * (c // 5)) % 7
    check = valid & ~ties
    assert check.float().mean() > 0.25
    assert torch.equal(out_m[check], expect[check])
    # padding: image 0 and mask ignore together
    assert (out_i[:, 0][~valid] == 0).all()
    # per-sample parameters: identical inputs do not all come out identical
    assert any(not torch.equal(out_i[0], out_i[k]) for k in range(1, 8))


def test_augmentation_identity_scale_keeps_pixels_and_covers_d4():
    image, mask = _coordinate_batch(32, 32)
    out_i, out_m = augment_batch(image, mask, 32, (1.0,), 255, generator=torch.Generator().manual_seed(1))
    assert (out_m != 255).all()  # no padding at scale 1 when patch == crop
    # every output is a D4 transform of the input: corner (0,0)'s position identifies it
    corners = {tuple((o[0] == 0).logical_and(o[1] == 0).nonzero()[0].tolist()) for o in out_i}
    assert len(corners) >= 3
    assert all(set(o[0].unique().tolist()) == set(range(32)) for o in out_i)


def test_on_after_batch_transfer_only_in_training(tmp_path):
    _folder(tmp_path, sizes=((64, 64), (64, 64)), nodata_first=False)
    dm = build_datamodule(_cfg("folder", tmp_path))
    batch = next(iter(dm.train_dataloader()))
    dm.trainer = SimpleNamespace(training=False)
    assert dm.on_after_batch_transfer(batch, 0)["image"].shape[-1] == 64
    dm.trainer = SimpleNamespace(training=True)
    assert dm.on_after_batch_transfer(batch, 0)["image"].shape[-1] == 32


def test_mask_nodata_outside_classes_is_ignored(tmp_path):
    _folder(tmp_path, sizes=((20, 20), (20, 20)), nodata_first=False)
    msk = np.zeros((20, 20), np.uint8)
    msk[:, :4] = 200
    write_raster(tmp_path / "masks" / "t0.tif", msk, nodata=200)
    dm = build_datamodule(_cfg("folder", tmp_path))
    t0 = next(p for p in dm.pairs("train") + dm.pairs("val") if p.name == "t0")
    from rsseg.data.tiles import read_pair

    _, mask = read_pair(t0, 2, 255)
    assert (mask[:, :4] == 255).all() and (mask[:, 4:] == 0).all()
