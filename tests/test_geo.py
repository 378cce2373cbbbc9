"""Imagery + vector labels through TorchGeo (``dataset.name: geo``) and TorchGeo datamodules
(``dataset.name: torchgeo``), on real data: the OpenAerialMap Tanzania mosaic with its 84
OpenStreetMap building footprints, and LoveDA Rural tiles in TorchGeo's layout."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import torch
import yaml
from click.testing import CliRunner
from rasterio.features import geometry_mask

from rsseg.checkpoint import read_meta
from rsseg.cli.main import main
from rsseg.data import build_datamodule
from rsseg.data.geo_reader import GeoScene
from rsseg.errors import RsSegError
from rsseg.runconfig import config_from_dict

CLASSES = {"classes": ["background", "building"], "colors": ["#000000", "#ff0000"]}
LOVEDA_CLASSES = ["background", "building", "road", "water", "barren", "forest", "agriculture"]
LOVEDA_COLORS = ["#ffffff", "#ff0000", "#ffff00", "#0000ff", "#9f81b7", "#00ff00", "#ffc380"]
TINY = {"optim": {"max_epochs": 1, "batch_size": 4, "crop_size": 64, "scales": [1.0]}}


def run(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module", autouse=True)
def stats_cache(tmp_path_factory) -> Path:
    """Dataset statistics are cached per user; tests keep theirs to themselves."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RSSEG_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="module")
def tanzania(shared_data) -> Path:
    return shared_data / "oam_tanzania"


@pytest.fixture(scope="module")
def grid(tanzania):
    """Transform, CRS, labels and image of the mosaic (the reference the labels must reproduce)."""
    with rasterio.open(tanzania / "tanzania_west_buildings.tif") as m, rasterio.open(tanzania / "tanzania_west_rgb.tif") as im:
        return m.transform, m.crs, m.read(1), im.read()


def geo_dataset(tanzania: Path, **geo) -> dict:
    return {"name": "geo", "root": str(tanzania), **CLASSES,
            "geo": {"images": ["tanzania_west_*rgb.tif"], "labels": ["tanzania_west_buildings.gpkg"],
                    "layer": "buildings", **geo}}


def pixel_box(transform, row0: int, col0: int, row1: int, col1: int):
    """Polygon of a pixel window (rows/cols may be fractional)."""
    (x0, y0), (x1, y1) = transform @ (col0, row0), transform @ (col1, row1)
    return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def block_offset(block, transform) -> tuple[int, int]:
    xmin, _, _, ymax = block.box.bounds
    col, row = ~transform @ (xmin, ymax)
    return round(row), round(col)


def scene_mosaic(scene: GeoScene, transform, shape) -> tuple[np.ndarray, np.ndarray]:
    """Every block of a scene read back and placed on the mosaic's grid."""
    labels = np.full(shape, 254, dtype=np.uint8)
    image = np.zeros((3, *shape), dtype=np.float32)
    for block in scene.blocks:
        im, lab = scene.read_block(block)
        r, c = block_offset(block, transform)
        # the part of the block on the canvas (a warped scene's footprint may reach past it)
        r0, c0 = max(r, 0), max(c, 0)
        r1, c1 = min(r + lab.shape[0], shape[0]), min(c + lab.shape[1], shape[1])
        if r1 > r0 and c1 > c0:
            labels[r0:r1, c0:c1] = lab[r0 - r : r1 - r, c0 - c : c1 - c]
            image[:, r0:r1, c0:c1] = im[:, r0 - r : r1 - r, c0 - c : c1 - c]
    return image, labels


# ------------------------------------------------------------------------------------------ rasterised labels
def test_rasterised_osm_labels_equal_the_mask_raster_pixel_for_pixel(tanzania, grid):
    transform, _, reference, rgb = grid
    cfg = config_from_dict({"dataset": geo_dataset(tanzania, attribute="class_name")})
    scene = GeoScene(cfg.dataset)
    assert len(scene.blocks) == 16  # 4096 px at 1024 px blocks, the whole mosaic (no AOI)
    image, labels = scene_mosaic(scene, transform, reference.shape)
    assert np.array_equal(labels, reference)
    assert np.array_equal(image, rgb.astype(np.float32))  # read on the scene's own grid: no resampling


def test_labels_in_another_crs_are_reprojected_onto_the_imagery(tanzania, grid, tmp_path):
    transform, crs, reference, _ = grid
    gdf = gpd.read_file(tanzania / "tanzania_west_buildings.gpkg", layer="buildings")
    assert gdf.crs == crs  # the imagery is in EPSG:3857
    gdf.to_crs("EPSG:4326").to_file(tmp_path / "labels_4326.gpkg", layer="osm", driver="GPKG")
    cfg = config_from_dict({"dataset": {**geo_dataset(tanzania, label_class="building", block_size=2048),
                                        "geo": {"images": [str(tanzania / "tanzania_west_rgb.tif")],
                                                "labels": [str(tmp_path / "labels_4326.gpkg")], "layer": "osm",
                                                "label_class": "building", "block_size": 2048}}})
    scene = GeoScene(cfg.dataset)
    assert scene.labels.crs == scene.imagery.crs
    _, labels = scene_mosaic(scene, transform, reference.shape)
    # 3857 -> 4326 -> 3857 moves vertices by float rounding only: at most a few edge pixels flip
    assert (labels != reference).sum() < 1e-4 * reference.size
    assert abs(int((labels == 1).sum()) - int((reference == 1).sum())) < 1e-4 * (reference == 1).sum()


# ------------------------------------------------------------------------------------------ spatial split
@pytest.fixture(scope="module")
def aoi(tanzania, grid, tmp_path_factory) -> Path:
    """An AOI over the built-up part of the mosaic, deliberately off the 256 px block grid."""
    path = tmp_path_factory.mktemp("aoi") / "aoi.geojson"
    gpd.GeoDataFrame(geometry=[pixel_box(grid[0], 500, 760, 1010, 1270)], crs=grid[1]).to_file(path)
    return path


def small_geo_cfg(tanzania, aoi, **extra) -> dict:
    return {"dataset": {**geo_dataset(tanzania, label_class="building", aoi=str(aoi), block_size=256, samples_per_epoch=8),
                        "normalization": "stats", "val_fraction": 0.15},
            **TINY, "inference": {"tile": 256, "overlap": 32}, **extra}


def test_spatial_split_keeps_validation_off_training_ground(tanzania, aoi, grid):
    dm = build_datamodule(config_from_dict(small_geo_cfg(tanzania, aoi)))
    scene = dm.scene
    region = gpd.read_file(aoi).union_all()
    train, val = scene.ground("train"), scene.ground("val")
    assert scene.split_blocks("val") and scene.split_blocks("train")
    assert train.intersection(val).area == pytest.approx(0, abs=1e-6)
    assert (train | val).symmetric_difference(region).area == pytest.approx(0, abs=1e-6)
    dm.setup("fit")
    boxes = list(dm.train_sampler)
    assert len(boxes) == 8
    for x, y in boxes:  # every training patch lies wholly on training ground
        assert shapely.box(x.start, y.start, x.stop, y.stop).difference(train).area < 1e-9
    # validation (grid patches and whole blocks alike) scores each pixel of the validation ground
    # exactly once, with its reference label, and nothing outside it
    transform, _, reference, _ = grid
    inside = geometry_mask([val], reference.shape, transform, invert=True)
    expected = np.bincount(reference[inside], minlength=2)
    counts = np.zeros(2, np.int64)
    for batch in dm.val_dataloader():
        assert batch["image"].shape[1:] == (3, 64, 64) and batch["mask"].dtype == torch.int64
        counts += np.bincount(batch["mask"][batch["mask"] != 255].numpy(), minlength=2)
    assert counts.tolist() == expected.tolist()
    counts[:] = 0
    for item in dm.eval_tiles("val"):
        counts += np.bincount(item["mask"][item["mask"] != 255].numpy(), minlength=2)
    assert counts.tolist() == expected.tolist()


# ------------------------------------------------------------------------------------------ train, stats, evaluate
@pytest.fixture(scope="module")
def geo_run(tanzania, aoi, tmp_path_factory):
    out = tmp_path_factory.mktemp("geo_run")
    cfg_path = out / "scene.yaml"
    cfg_path.write_text(yaml.safe_dump(small_geo_cfg(tanzania, aoi)))
    res = run("train", "-c", str(cfg_path), "-o", str(out / "run"), "--devices", "1")
    assert res.exit_code == 0, res.output
    return cfg_path, out / "run" / "best.ckpt"


def test_train_on_scene_and_osm_buildings_records_what_predict_needs(geo_run):
    _, ckpt = geo_run
    meta = read_meta(ckpt)
    assert meta.classes == CLASSES["classes"] and meta.colors == CLASSES["colors"]
    assert meta.bands == ["red", "green", "blue"] and meta.ignore_index == 255
    assert meta.gsd == pytest.approx(0.0746455, rel=1e-5)
    assert all(0 < m < 1 for m in meta.mean) and all(0 < s < 1 for s in meta.std)  # from the training ground
    assert meta.config["dataset"]["geo"]["label_class"] == "building"


def test_stats_count_the_training_ground_of_the_mask(geo_run, tanzania, aoi, grid, stats_cache, tmp_path):
    cfg_path, _ = geo_run
    # training cached the statistics of its training ground: stats --no-cache recomputes the same
    assert list(stats_cache.glob("stats_oam_tanzania_*.json"))
    out = tmp_path / "stats.json"
    res = run("stats", "--root", str(tanzania), "-c", str(cfg_path), "-o", str(out), "--no-cache")
    assert res.exit_code == 0, res.output
    stats = json.loads(out.read_text())
    res = run("stats", "--root", str(tanzania), "-c", str(cfg_path), "-o", str(tmp_path / "cached.json"))
    assert json.loads((tmp_path / "cached.json").read_text()) == stats
    transform, _, reference, rgb = grid
    scene = GeoScene(config_from_dict(small_geo_cfg(tanzania, aoi)).dataset)
    inside = geometry_mask([scene.ground("train")], reference.shape, transform, invert=True)
    assert stats["pixel_counts"] == np.bincount(reference[inside], minlength=2).tolist()
    assert stats["num_images"] == len(scene.split_blocks("train"))
    assert stats["mean"] == pytest.approx((rgb[:, inside] / 255.0).mean(1).tolist(), abs=1e-6)


def test_evaluate_checkpoint_scores_the_validation_blocks(geo_run, tanzania, grid, tmp_path):
    cfg_path, ckpt = geo_run
    res = run("evaluate", "-m", str(ckpt), "--split", "val", "-o", str(tmp_path / "rep"))
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    transform, _, reference, _ = grid
    scene = build_datamodule(read_meta(ckpt).build_config()).scene
    inside = geometry_mask([scene.ground("val")], reference.shape, transform, invert=True)
    conf = np.array(report["confusion_matrix"])
    assert conf.sum(1).tolist() == np.bincount(reference[inside], minlength=2).tolist()


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(("change", "message"), [
    ({"geo": {"images": ["a.tif"], "labels": ["x.gpkg"], "label_class": "roof"}}, "not in dataset.classes"),
    ({"torchgeo": {"class_path": None}, "name": "torchgeo"}, "class_path"),
])
def test_config_errors_name_the_key(change, message):
    ds = {"name": "geo", **CLASSES, **change}
    with pytest.raises(RsSegError, match=message):
        config_from_dict({"dataset": ds})


def test_label_values_without_a_class_and_disjoint_scenes_fail_in_one_line(tanzania, shared_data, tmp_path):
    gdf = gpd.read_file(tanzania / "tanzania_west_buildings.gpkg", layer="buildings").set_crs(None, allow_override=True)
    gdf.to_file(tmp_path / "no_crs.shp")
    cfg = config_from_dict({"dataset": {**geo_dataset(tanzania, label_class="building"),
                                        "geo": {"images": ["tanzania_west_rgb.tif"], "labels": [str(tmp_path / "no_crs.shp")],
                                                "label_class": "building"}}})
    with pytest.raises(RsSegError, match="no CRS"):
        GeoScene(cfg.dataset)
    cfg = config_from_dict({"dataset": {**geo_dataset(tanzania, label_class="building"), "geo": {"labels": ["x.gpkg"], "label_class": "building"}}})
    with pytest.raises(RsSegError, match="dataset.geo.images"):
        GeoScene(cfg.dataset)
    cfg = config_from_dict({"dataset": geo_dataset(tanzania, attribute="osm_id")})
    with pytest.raises(RsSegError, match="osm_id"):
        GeoScene(cfg.dataset)
    cfg = config_from_dict({"dataset": {**geo_dataset(tanzania, label_class="building"), "root": None,
                                        "geo": {"images": [str(shared_data / "landsat" / "RGB.byte.tif")],
                                                "labels": [str(tanzania / "tanzania_west_buildings.gpkg")],
                                                "label_class": "building"}}})
    with pytest.raises(RsSegError, match="do not overlap"):
        GeoScene(cfg.dataset)


def test_a_label_file_without_features_is_named_not_blamed_on_the_crs(tanzania, tmp_path):
    gdf = gpd.read_file(tanzania / "tanzania_west_buildings.gpkg", layer="buildings")
    gdf.iloc[:0].to_file(tmp_path / "empty.gpkg", layer="buildings")
    ds = {**geo_dataset(tanzania, label_class="building"),
          "geo": {"images": ["tanzania_west_rgb.tif"], "labels": [str(tmp_path / "empty.gpkg")], "layer": "buildings",
                  "label_class": "building"}}
    config = tmp_path / "empty.yaml"
    config.write_text(yaml.safe_dump({"dataset": ds, **TINY}))
    res = run("train", "-c", str(config), "-o", str(tmp_path / "run"))
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert line.startswith("error:") and "\n" not in line, line
    assert "empty.gpkg holds no features (layer 'buildings')" in line and "overlap" not in line, line
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------ TorchGeo datamodules
@pytest.fixture(scope="module")
def loveda_root(shared_data, tmp_path_factory) -> Path:
    """LoveDA Rural in TorchGeo's extracted layout (Rural only): 256 px crops of two Train tiles and
    one Val tile, so that validating a whole tile takes a CPU seconds, not minutes."""
    from PIL import Image

    src = shared_data / "loveda_rural"
    root = tmp_path_factory.mktemp("loveda")
    # (split, tile, left, top): all 7 classes and LoveDA's no-data value 0 among the training crops
    for split, n, x, y in (("Train", "17", 0, 768), ("Train", "18", 0, 256), ("Val", "27", 768, 0)):
        for kind in ("images_png", "masks_png"):
            d = root / split / "Rural" / kind
            d.mkdir(parents=True, exist_ok=True)
            with Image.open(src / split / "Rural" / kind / f"{n}.png") as im:
                im.crop((x, y, x + 256, y + 256)).save(d / f"{n}.png")
    return root


def _raw_masks(root: Path, split: str) -> np.ndarray:
    from PIL import Image

    return np.stack([np.array(Image.open(p)) for p in sorted((root / split / "Rural" / "masks_png").glob("*.png"))])


def test_torchgeo_loveda_datamodule_trains_and_evaluates_under_rssegs_contract(loveda_root, tmp_path):
    overrides = ["dataset.torchgeo.init_args.scene=[rural]", "optim.batch_size=2", "optim.crop_size=64",
                 "optim.scales=[1.0]", "inference.tile=512", "inference.overlap=32", "dataset.normalization=stats"]
    res = run("stats", "--root", str(loveda_root), "--dataset", "torchgeo", "-o", str(tmp_path / "stats.json"), *overrides)
    assert res.exit_code == 0, res.output
    stats = json.loads((tmp_path / "stats.json").read_text())
    raw = _raw_masks(loveda_root, "Train")
    assert stats["pixel_counts"] == np.bincount(raw[raw > 0] - 1, minlength=7).tolist()  # no-data 0 -> ignore
    assert stats["ignored_pixels"] == int((raw == 0).sum()) > 0 and stats["num_images"] == 2

    res = run("train", "--dataset", "torchgeo", "--root", str(loveda_root), "--max-epochs", "1",
              "-o", str(tmp_path / "run"), "--devices", "1", *overrides)
    assert res.exit_code == 0, res.output
    ckpt = tmp_path / "run" / "best.ckpt"
    meta = read_meta(ckpt)
    assert meta.classes == LOVEDA_CLASSES and meta.colors == LOVEDA_COLORS and meta.gsd == 0.3
    assert meta.mean == pytest.approx(stats["mean"])
    # the wrapped datamodule hides its files: the input contract is measured on its training samples
    assert meta.input_dtype is not None and len(meta.input_range) == 3 and 100 < meta.input_range[0][1] <= 255

    res = run("evaluate", "-m", str(ckpt), "--split", "val", "-o", str(tmp_path / "rep"))
    assert res.exit_code == 0, res.output
    conf = np.array(json.loads((tmp_path / "rep" / "report.json").read_text())["confusion_matrix"])
    val = _raw_masks(loveda_root, "Val")
    assert conf.sum(1).tolist() == np.bincount(val[val > 0] - 1, minlength=7).tolist()


def test_torchgeo_batches_follow_the_batch_contract(loveda_root):
    cfg = config_from_dict({"dataset": {"name": "torchgeo", "root": str(loveda_root), "classes": LOVEDA_CLASSES,
                                        "colors": LOVEDA_COLORS, "normalization": "custom", "mean": [0.5] * 3, "std": [0.25] * 3,
                                        "torchgeo": {"class_path": "torchgeo.datamodules.LoveDADataModule",
                                                     "init_args": {"scene": ["rural"]}, "label_map": [255, 0, 1, 2, 3, 4, 5, 6]}},
                            "optim": {"batch_size": 1}})
    dm = build_datamodule(cfg)
    raw = next(iter(dm.val_dataloader()))
    batch = dm.to_contract(raw)
    assert torch.allclose(batch["image"], (raw["image"] / 255 - 0.5) / 0.25)
    expected = torch.where(raw["mask"] == 0, 255, raw["mask"] - 1)
    assert torch.equal(batch["mask"], expected) and batch["mask"].dtype == torch.int64
    with pytest.raises(RsSegError, match="no test split"):
        next(dm.eval_tiles("test"))


def test_torchgeo_class_path_errors_are_one_line():
    base = {"name": "torchgeo", **CLASSES}
    for path, message in (("torchgeo.datamodules.NoSuchModule", "cannot import"), ("torchgeo.datasets.LoveDA", "not a LightningDataModule")):
        cfg = config_from_dict({"dataset": {**base, "torchgeo": {"class_path": path}}})
        with pytest.raises(RsSegError, match=message):
            build_datamodule(cfg)


def test_several_scenes_in_different_crss_form_one_dataset(tanzania, grid, tmp_path):
    """The top 1024 rows of the mosaic as two scenes: the left half as it is (EPSG:3857), the right
    half warped to UTM 37S. The labels still come out on the first scene's grid."""
    from rasterio.warp import calculate_default_transform, reproject
    from rasterio.windows import Window

    transform, _, reference, rgb = grid
    with rasterio.open(tanzania / "tanzania_west_rgb.tif") as src:
        profile = {**src.profile, "driver": "GTiff", "compress": "deflate", "photometric": "rgb", "tiled": False}
        profile.pop("blockxsize"), profile.pop("blockysize")
        for name, col in (("a_left", 0), ("b_right", 2048)):
            win = Window(col, 0, 2048, 1024)
            data, t = src.read(window=win), src.window_transform(win)
            if name == "a_left":
                with rasterio.open(tmp_path / f"{name}.tif", "w", **{**profile, "width": 2048, "height": 1024, "transform": t}) as dst:
                    dst.write(data)
                continue
            dst_t, w, h = calculate_default_transform(src.crs, "EPSG:32737", 2048, 1024, *rasterio.windows.bounds(win, src.transform))
            with rasterio.open(tmp_path / f"{name}.tif", "w", **{**profile, "crs": "EPSG:32737", "width": w, "height": h,
                                                                  "transform": dst_t, "nodata": 0}) as dst:
                reproject(data, rasterio.band(dst, [1, 2, 3]), src_transform=t, src_crs=src.crs, dst_transform=dst_t,
                          dst_crs="EPSG:32737")
    cfg = config_from_dict({"dataset": geo_dataset(tanzania, label_class="building") | {"root": str(tmp_path)} | {
        "geo": {"images": ["*.tif"], "labels": [str(tanzania / "tanzania_west_buildings.gpkg")],
                "label_class": "building", "block_size": 1024}}})
    scene = GeoScene(cfg.dataset)
    assert len(scene.files) == 2 and scene.imagery.crs.to_epsg() == 3857
    image, labels = scene_mosaic(scene, transform, (1024, 4096))
    # the left scene reads back exactly; labels are drawn on the first scene's grid everywhere
    assert np.array_equal(image[:, :, :2048], rgb[:, :1024, :2048].astype(np.float32))
    labelled = labels != 255
    assert labelled[:, :2040].all() and labelled.mean() > 0.99
    assert np.array_equal(labels[labelled], reference[:1024][labelled])
