"""What predict, evaluate, export and the viewer refuse, and what they accept.

One table, fed like a real archive of mixed rasters: every refusal must exit 2 with exactly one
``error:`` line naming the problem (no traceback), leave old outputs byte-identical and nothing
new (no hidden temporary file or folder beside the outputs, nothing in the temp dir), and, where
it can, refuse before the model loads. The cases that already hold stay in the table so they
keep holding. Semantic checks (NaN pixels, rescaling, all-or-nothing) follow the table.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from conftest import write_onnx_model, write_raster
from rasterio.windows import Window

import rsseg.checkpoint
from rsseg.checkpoint import ModelMeta, save_model
from rsseg.cli.main import main
from rsseg.config import Config, ModelConfig
from rsseg.errors import InputRasterError
from rsseg.inference.contract import measure_training_input
from rsseg.models import build_model

SIZE = 96
OLD = b"old output: must survive a refused or failed run byte for byte"


class _Code:
    """A pickled object that would run code if unpickled without weights_only."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


#: tensors spoiled in the corrupt-weights cases (the first convolution, a BatchNorm variance)
NAN_TENSOR, BN_TENSOR = "encoder.conv1.weight", "encoder.bn1.running_var"


def _spoiled(model: torch.nn.Module, name: str, value: float) -> torch.nn.Module:
    """A copy of ``model`` with one element of its tensor ``name`` set to ``value``."""
    spoiled = copy.deepcopy(model)
    with torch.no_grad():
        spoiled.state_dict()[name].view(-1)[0] = value
    return spoiled


def _meta(**changes) -> ModelMeta:
    base = dict(classes=["background", "building"], colors=["#000000", "#ff0000"], bands=["red", "green", "blue"],
                mean=[0.45, 0.45, 0.4], std=[0.22, 0.2, 0.2], config=Config().to_dict())
    return ModelMeta(**(base | changes))


@pytest.fixture(scope="module")
def assets(tmp_path_factory, sample_tiles) -> dict[str, Path]:
    """Inputs and checkpoints shared by every case (never written by a case)."""
    d = tmp_path_factory.mktemp("assets")
    with rasterio.open(sample_tiles / "tanzania" / "image.tif") as s:
        win = Window(0, 0, SIZE, SIZE)
        u8 = s.read(window=win)
        transform, crs = s.window_transform(win), s.crs
    with rasterio.open(sample_tiles / "tanzania" / "mask.tif") as s:
        labels = s.read(1, window=Window(0, 0, SIZE, SIZE))

    def put(name: str, data: np.ndarray, **kw) -> Path:
        return write_raster(d / name, data, crs=crs, transform=transform, **kw)

    a = {"u8": put("scene.tif", u8), "u16": put("scene_u16.tif", u8.astype(np.uint16) * 257),
         "f01": put("scene_f01.tif", (u8 / 255.0).astype(np.float32)),
         "f255": put("scene_f255.tif", u8.astype(np.float32)), "gray": put("gray.tif", u8[:1]),
         "mask": put("mask.tif", labels.astype(np.uint8)), "small_mask": put("small_mask.tif", labels[:50, :50].copy())}
    nodata = np.zeros_like(u8)
    a["all_nodata"] = put("all_nodata.tif", nodata, nodata=0)
    bad = labels.astype(np.uint8).copy()
    bad[0, :3] = 6
    a["bad_mask"] = put("bad_mask.tif", bad)
    frac = labels.astype(np.float32)
    frac[5, 5] = 0.5
    a["frac_mask"] = put("frac_mask.tif", frac)
    for sub in ("a", "b"):
        a[f"dup_{sub}"] = put(f"{sub}/x.tif", u8)
    # a tiled raster cut in half: the header opens, blocks further on fail to read
    big = np.tile(u8, (1, 3, 3))
    with rasterio.open(d / "full.tif", "w", driver="GTiff", width=big.shape[2], height=big.shape[1], count=3,
                       dtype="uint8", tiled=True, blockxsize=64, blockysize=64, crs=crs, transform=transform) as dst:
        dst.write(big)
    data = (d / "full.tif").read_bytes()
    (d / "truncated.tif").write_bytes(data[: len(data) // 2])
    a["truncated"] = d / "truncated.tif"
    (d / "empty.tif").write_bytes(b"")
    a["empty"] = d / "empty.tif"
    (d / "text.tif").write_text("this is not a raster\n")
    a["text"] = d / "text.tif"

    for root, image in (("ds8", u8), ("ds16", u8.astype(np.uint16) * 257)):  # folder datasets for evaluate -m
        for split in ("train", "val"):
            put(f"{root}/{split}/images/t.tif", image)
            put(f"{root}/{split}/masks/t.tif", labels.astype(np.uint8))
        a[root] = d / root

    with rasterio.open(d / "tile.png", "w", driver="PNG", width=SIZE, height=SIZE, count=3, dtype="uint8") as dst:
        dst.write(u8)  # a web-map tile: no CRS, no transform
    a["png"] = d / "tile.png"
    a["one_pixel"] = put("one_pixel.tif", u8[:, :1, :1].copy())
    bands = "".join(f'<VRTRasterBand dataType="Byte" band="{i}"><SimpleSource><SourceFilename relativeToVRT="1">'
                    f'gone.tif</SourceFilename><SourceBand>{i}</SourceBand></SimpleSource></VRTRasterBand>'
                    for i in (1, 2, 3))
    (d / "broken.vrt").write_text(f'<VRTDataset rasterXSize="10" rasterYSize="10">{bands}</VRTDataset>')
    a["broken_vrt"] = d / "broken.vrt"

    model = build_model(ModelConfig(), num_classes=2, in_channels=3).eval()
    contract = measure_training_input([(a["u8"], (1, 2, 3))])
    a["ckpt"] = save_model(d / "m.ckpt", model, _meta(**contract))
    a["old_ckpt"] = save_model(d / "old.ckpt", model, _meta())  # written before the input contract existed
    a["ckpt_classes"] = save_model(d / "classes.ckpt", model, _meta(
        classes=["a", "b", "c"], colors=["#000000", "#ff0000", "#00ff00"], **contract))
    a["ckpt_bands"] = save_model(d / "bands.ckpt", model, _meta(
        bands=["r", "g", "b", "nir"], mean=[0.5] * 4, std=[0.2] * 4, **contract))
    cfg = Config()
    cfg.model.decode_channels = 32
    a["ckpt_decoder"] = save_model(d / "decoder.ckpt", model, _meta(config=cfg.to_dict(), **contract))
    # its training images had no valid pixel to measure: a dtype but no range
    a["ckpt_no_range"] = save_model(d / "no_range.ckpt", model, _meta(input_dtype="uint8"))
    a["ckpt_nan"] = save_model(d / "nan.ckpt", _spoiled(model, NAN_TENSOR, float("nan")), _meta(**contract))
    a["ckpt_bn"] = save_model(d / "bn.ckpt", _spoiled(model, BN_TENSOR, -1.0), _meta(**contract))
    (d / "random.ckpt").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    a["ckpt_random"] = d / "random.ckpt"
    full = a["ckpt"].read_bytes()
    (d / "truncated.ckpt").write_bytes(full[: len(full) // 3])
    a["ckpt_truncated"] = d / "truncated.ckpt"
    torch.save({"state_dict": {}, "rsseg": {"x": _Code()}}, d / "code.ckpt")
    a["ckpt_code"] = d / "code.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, d / "plain.ckpt")
    a["ckpt_plain"] = d / "plain.ckpt"
    # exported models (.onnx, here one 1x1 convolution): the checkpoints' metadata, run by ONNX Runtime
    a["onnx"] = write_onnx_model(d / "m.onnx", {"rsseg": _meta(**contract).to_dict()})
    a["onnx_old"] = write_onnx_model(d / "old.onnx", {"rsseg": _meta().to_dict()})
    a["onnx_plain"] = write_onnx_model(d / "plain.onnx")
    (d / "random.onnx").write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    a["onnx_random"] = d / "random.onnx"
    # a predicted class raster with a value beyond its 2 classes
    pred = np.where(labels > 0, 1, 0).astype(np.uint8)
    pred[0, 0] = 5
    a["pred_bad"] = put("pred_bad.tif", pred)
    a["pred"] = put("pred.tif", np.where(labels > 0, 1, 0).astype(np.uint8))
    # vector references over the scene: one footprint, as a class name the model knows and one it does not
    import geopandas as gpd
    import shapely

    (x0, y0), (x1, y1) = transform @ (20, 20), transform @ (50, 50)
    footprint = gpd.GeoDataFrame({"class_name": ["building"]}, geometry=[shapely.box(x0, y1, x1, y0)], crs=crs.to_wkt())
    for key, value in (("ref_gpkg", "building"), ("ref_house", "house")):
        a[key] = d / f"{key}.gpkg"
        footprint.assign(class_name=value).to_file(a[key], engine="pyogrio")
    return a


@dataclass
class Case:
    id: str
    #: (assets, work dir) -> command line
    args: Callable[[dict[str, Path], Path], list[str]]
    #: exit code; 2 = refused with one line
    code: int = 2
    #: substrings of the one error line (all must appear)
    says: tuple[str, ...] = ()
    #: the refusal must come before the model loads
    before_load: bool = True
    #: pre-existing outputs (relative to the work dir) that must survive byte for byte
    old: tuple[str, ...] = ("out.tif", "out.gpkg")
    #: substrings the output must not hold
    never: tuple[str, ...] = ("Traceback", "weights_only")


def predict(*extra: str, src: str = "u8", ckpt: str = "ckpt", overwrite: bool = True):
    def build(a: dict[str, Path], w: Path) -> list[str]:
        args = ["predict", str(a[src]), "-m", str(a[ckpt]), "-o", str(w / "out.tif"), "--tile", "64", "--overlap", "16"]
        args += [x.format(w=w, **{k: str(v) for k, v in a.items()}) for x in extra]
        return args + (["--overwrite"] if overwrite else [])
    return build


def cmd(*parts: str):
    def build(a: dict[str, Path], w: Path) -> list[str]:
        return [x.format(w=w, **{k: str(v) for k, v in a.items()}) for x in parts]
    return build


def predict_many(*keys: str, extra: tuple[str, ...] = ("--overwrite",)):
    def build(a: dict[str, Path], w: Path) -> list[str]:
        srcs = [str(a[k]) if k in a else str(w / k) for k in keys]
        return ["predict", *srcs, "-m", str(a["ckpt"]), "-o", str(w / "out.tif"), "--tile", "64", "--overlap", "16",
                *extra]
    return build


CASES = [
    # -- 2: input value range vs the checkpoint ------------------------------------------------
    Case("uint16_copy_of_uint8_scene", predict(src="u16"), says=("training range", "--scale 1/257", "uint16")),
    Case("float_0_1_copy_of_uint8_scene", predict(src="f01"), says=("training range", "--scale 25", "--scale auto")),
    Case("wrong_scale_factor", predict("--scale", "2", src="u16"), says=("after --scale", "training range")),
    Case("scale_not_a_number", predict("--scale", "abc"), says=("--scale 'abc' is not a number",)),
    Case("scale_zero", predict("--scale", "0"), says=("positive factor",)),
    Case("scale_auto_needs_recorded_range", predict("--scale", "auto", ckpt="ckpt_no_range"),
         says=("needs the training value range",)),
    # -- 4: output collisions --------------------------------------------------------------------
    Case("same_name_in_two_folders", predict_many("dup_a", "dup_b", extra=()), old=(),
         says=("would both write", "a/x.tif", "b/x.tif")),
    Case("same_name_in_two_folders_overwrite", predict_many("dup_a", "dup_b"), old=("out_x.tif",),
         says=("would both write", "a/x.tif", "b/x.tif")),
    Case("same_input_twice", predict_many("u8", "u8"), says=("given twice",)),
    Case("output_is_the_input", cmd("predict", "{u8}", "-m", "{ckpt}", "-o", "{u8}", "--overwrite"),
         says=("is the input raster",)),
    Case("report_onto_class_raster", predict("--report", "{w}/out.tif"), says=("the area report is JSON", "out.json")),
    # -- 9: unreadable inputs and checkpoints, unwritable outputs ------------------------------------
    Case("truncated_geotiff", predict(src="truncated"), says=("truncated, corrupt", "truncated.tif")),
    Case("truncated_geotiff_mid_run", predict(src="truncated", ckpt="ckpt_no_range"), before_load=False,
         says=("truncated, corrupt", "at rows")),
    Case("empty_file", predict(src="empty"), says=("cannot read input raster", "empty.tif")),
    Case("text_file_named_tif", predict(src="text"), says=("cannot read input raster", "text.tif")),
    Case("checkpoint_random_bytes", predict(ckpt="ckpt_random"), says=("cannot read checkpoint", "not a PyTorch file")),
    Case("checkpoint_truncated", predict(ckpt="ckpt_truncated"), says=("cannot read checkpoint",)),
    Case("checkpoint_with_code", predict(ckpt="ckpt_code"), says=("could run code",)),
    Case("checkpoint_without_rsseg_metadata", predict(ckpt="ckpt_plain"), says=("not an rsseg checkpoint",)),
    Case("checkpoint_missing", cmd("predict", "{u8}", "-m", "{w}/nope.ckpt", "-o", "{w}/out.tif", "--overwrite"),
         says=("checkpoint not found",)),
    Case("weights_for_other_class_count", predict(ckpt="ckpt_classes"), before_load=False,
         says=("weights do not match its metadata", "3 classes")),
    Case("weights_for_other_band_count", predict("--bands", "1,2,3,1", ckpt="ckpt_bands"), before_load=False,
         says=("weights do not match its metadata", "4 bands")),
    Case("weights_for_other_decoder", predict(ckpt="ckpt_decoder"), before_load=False,
         says=("weights do not match its metadata", "32-channel decoder")),
    Case("output_folder_missing", cmd("predict", "{u8}", "-m", "{ckpt}", "-o", "{w}/nodir/out.tif"),
         says=("does not exist",)),
    Case("output_parent_is_a_file", cmd("predict", "{u8}", "-m", "{ckpt}", "-o", "{w}/out.gpkg/out.tif"),
         says=("does not exist",)),
    # -- 10: window settings ---------------------------------------------------------------------
    Case("tile_0", predict("--tile", "0"), says=("tile must be positive",)),
    Case("tile_negative", predict("--tile", "-64"), says=("tile must be positive",)),
    Case("overlap_negative", predict("--overlap", "-1"), says=("overlap must be in [0, tile)",)),
    Case("overlap_equals_tile", predict("--overlap", "64"), says=("overlap must be in [0, tile)",)),
    Case("overlap_above_tile", predict("--overlap", "100"), says=("overlap must be in [0, tile)",)),
    Case("batch_0", predict("--window-batch", "0"), says=("batch must be at least 1",)),
    # -- 12: check before work -----------------------------------------------------------------
    Case("second_input_missing", predict_many("u8", "missing.tif"), old=("out_scene.tif",),
         says=("input raster not found", "missing.tif")),
    Case("archive_with_one_uint16_scene", predict_many("u8", "u16"), old=("out_scene.tif",),
         says=("scene_u16.tif", "training range")),
    Case("archive_with_one_corrupt_scene", predict_many("u8", "truncated"), old=("out_scene.tif",),
         says=("truncated.tif", "truncated, corrupt")),
    Case("vrt_with_a_missing_source", predict(src="broken_vrt"), says=("broken.vrt",)),
    Case("grayscale_for_rgb_model", predict(src="gray"), says=("1 band(s) but the model needs 3",)),
    Case("bands_out_of_range", predict("--bands", "1,2,5"), says=("out of range",)),
    Case("bands_wrong_count", predict("--bands", "1,2"), says=("lists 2 band(s) but the model needs 3",)),
    Case("unknown_vector_format", predict("--vector", "{w}/out.xyz"), says=(".xyz",)),
    Case("existing_output_without_overwrite", predict(overwrite=False), says=("already exists", "--overwrite")),
    Case("reference_missing", predict("--reference", "{w}/nope.tif"), says=("not found", "nope.tif")),
    Case("reference_on_other_grid", predict("--reference", "{small_mask}"), says=("same grid",)),
    Case("reference_with_several_inputs", predict_many("dup_a", "u8", extra=("--reference", "x.tif")), old=(),
         says=("--reference applies to a single input",)),
    # -- 3: scoring (one validation for predict --reference and evaluate) -------------------------
    Case("reference_value_beyond_classes", predict("--reference", "{bad_mask}"), before_load=False,
         says=("values [6] outside the 2 classes",)),
    Case("evaluate_prediction_id_beyond_classes",
         cmd("evaluate", "{pred_bad}", "{mask}", "--classes", "background,building", "-o", "{w}/rep"), old=(),
         says=("class ids [5] but only 2 classes",)),
    Case("evaluate_reference_beyond_classes", cmd("evaluate", "{pred}", "{bad_mask}", "--classes", "a,b", "-o", "{w}/rep"),
         old=(), says=("values [6] outside the 2 classes",)),
    Case("evaluate_fractional_reference", cmd("evaluate", "{pred}", "{frac_mask}", "--classes", "a,b", "-o", "{w}/rep"),
         old=(), says=("outside the 2 classes",)),
    Case("evaluate_other_grid", cmd("evaluate", "{pred}", "{small_mask}", "--classes", "a,b", "-o", "{w}/rep"), old=(),
         says=("same grid",)),
    Case("evaluate_without_class_names", cmd("evaluate", "{pred}", "{mask}", "-o", "{w}/rep"), old=(),
         says=("carries no class names", "--classes")),
    Case("evaluate_report_folder_under_a_file", cmd("evaluate", "-m", "{ckpt}", "-o", "{w}/out.tif/rep"),
         says=("report folder", "is a file")),
    Case("evaluate_checkpoint_tile_0", cmd("evaluate", "-m", "{ckpt}", "--tile", "0", "-o", "{w}/rep"), old=(),
         says=("tile must be positive",)),
    Case("evaluate_checkpoint_random_bytes", cmd("evaluate", "-m", "{ckpt_random}", "-o", "{w}/rep"), old=(),
         says=("cannot read checkpoint",)),
    Case("evaluate_checkpoint_on_a_uint16_dataset", cmd("evaluate", "-m", "{ckpt}", "--root", "{ds16}", "--tile", "64",
                                                        "--overlap", "16", "-o", "{w}/rep"), old=(),
         says=("training range", "rescale the images")),
    # -- export -----------------------------------------------------------------------------------
    Case("export_random_bytes", cmd("export", "-m", "{ckpt_random}", "-o", "{w}/m.onnx"), old=(), before_load=False,
         says=("cannot read checkpoint",)),
    Case("export_folder_missing", cmd("export", "-m", "{ckpt}", "-o", "{w}/nodir/m.onnx"), old=(), says=("does not exist",)),
    Case("export_existing", cmd("export", "-m", "{ckpt}", "-o", "{w}/out.tif"), says=("already exists",)),
    # -- what holds: accepted inputs ---------------------------------------------------------------
    Case("uint8_scene", predict(), code=0, before_load=False, old=()),
    Case("float_copy_in_the_training_range", predict(src="f255"), code=0, before_load=False, old=()),
    Case("uint16_with_scale_factor", predict("--scale", "1/257", src="u16"), code=0, before_load=False, old=()),
    Case("float_0_1_with_scale_auto", predict("--scale", "auto", src="f01"), code=0, before_load=False, old=()),
    Case("all_nodata_scene", predict(src="all_nodata"), code=0, before_load=False, old=()),
    Case("evaluate_checkpoint_on_a_uint8_dataset", cmd("evaluate", "-m", "{ckpt}", "--root", "{ds8}", "--tile", "64",
                                                       "--overlap", "16", "-o", "{w}/rep"), code=0, before_load=False, old=()),
    Case("png_tile_without_crs", predict(src="png"), code=0, before_load=False, old=()),
    Case("one_pixel_raster", predict(src="one_pixel"), code=0, before_load=False, old=()),
    Case("same_names_with_distinct_stems", predict_many("u8", "dup_a"), code=0, before_load=False, old=()),
]

# -- models that cannot lie: an input contract in every checkpoint, weights checked at load ------------
CASES += [
    Case("checkpoint_without_input_contract", predict(src="u16", ckpt="old_ckpt"),
         says=("old.ckpt records no input contract", "rsseg import", "--calibrate SCENE")),
    Case("dask_checkpoint_without_input_contract", predict("--dask", "local:1", ckpt="old_ckpt"),
         says=("old.ckpt records no input contract",)),
    Case("evaluate_checkpoint_without_input_contract", cmd("evaluate", "-m", "{old_ckpt}", "--root", "{ds8}", "-o",
                                                           "{w}/rep"), old=(), says=("records no input contract",)),
    Case("checkpoint_with_a_nan_weight", predict(ckpt="ckpt_nan"), before_load=False,
         says=("nan.ckpt is corrupt", NAN_TENSOR, "NaN or infinite")),
    Case("checkpoint_with_a_negative_batchnorm_variance", predict(ckpt="ckpt_bn"), before_load=False,
         says=("bn.ckpt is corrupt", BN_TENSOR, "negative variance")),
    Case("export_checkpoint_with_a_nan_weight", cmd("export", "-m", "{ckpt_nan}", "-o", "{w}/m.onnx"), old=(),
         before_load=False, says=("is corrupt", NAN_TENSOR)),
    Case("evaluate_checkpoint_with_a_negative_batchnorm_variance",
         cmd("evaluate", "-m", "{ckpt_bn}", "--root", "{ds8}", "--tile", "64", "--overlap", "16", "-o", "{w}/rep"),
         old=(), before_load=False, says=("is corrupt", "negative variance")),
    Case("no_range_recorded_skips_the_range_check", predict(src="u16", ckpt="ckpt_no_range"), code=0, before_load=False,
         old=()),
]


#: what pystac needs of an item beside its assets
ITEM_FIELDS = {"geometry": None, "properties": {"datetime": "2024-05-01T10:00:00Z"}}


def stac_item(href: str, *extra: str):
    """predict on a local STAC item (written beside the work dir) whose ``visual`` asset is ``href``."""
    def build(a: dict[str, Path], w: Path) -> list[str]:
        item = w.parent / "item.json"
        asset = {"href": href.format(**{k: str(v) for k, v in a.items()}), "type": "image/tiff"}
        item.write_text(json.dumps({"type": "Feature", "stac_version": "1.0.0", "id": "x", **ITEM_FIELDS,
                                    "assets": {"visual": asset}}))
        return ["predict", str(item), "-m", str(a["ckpt"]), "-o", str(w / "out.tif"), "--tile", "64", "--overlap", "16",
                "--overwrite", *extra]
    return build


def stac_bands(selection: str, coarse: str = ""):
    """predict on a local STAC item with one single-band asset per band of the u8 scene (Earth
    Search's layout: assets red, green, blue, eo:bands B04, B03, B02), the ``coarse`` one at half
    the resolution, reading ``--asset selection``."""
    def build(a: dict[str, Path], w: Path) -> list[str]:
        folder = w.parent / "bands"
        with rasterio.open(a["u8"]) as s:
            data, crs, transform = s.read(), s.crs, s.transform
        assets = {}
        for i, name in enumerate(("red", "green", "blue")):
            band, grid = (data[i][::2, ::2], transform @ rasterio.Affine.scale(2)) if name == coarse else (data[i], transform)
            write_raster(folder / f"{name}.tif", band, crs=crs, transform=grid)
            assets[name] = {"href": f"{name}.tif", "type": "image/tiff",
                            "eo:bands": [{"name": f"B0{4 - i}", "common_name": name}]}
        item = folder / "item.json"
        item.write_text(json.dumps({"type": "Feature", "stac_version": "1.0.0", "id": "x", **ITEM_FIELDS,
                                    "assets": assets}))
        return ["predict", str(item), "--asset", selection, "-m", str(a["ckpt"]), "-o", str(w / "out.tif"),
                "--tile", "64", "--overlap", "16", "--overwrite"]
    return build


CASES += [
    # -- remote inputs, numeric options, unwritable targets ------------------------------------------
    Case("stac_asset_file_url", stac_item("file://{u8}"), says=("file://", "--allow-local-assets")),
    Case("stac_asset_absolute_path", stac_item("{u8}"), says=("not an http(s), s3 or gs URL", "--allow-local-assets")),
    Case("stac_asset_vsizip", stac_item("/vsizip/{u8}.zip/scene.tif"), says=("/vsizip/", "--allow-local-assets")),
    Case("stac_asset_local_allowed", stac_item("{u8}", "--allow-local-assets"), code=0, before_load=False, old=()),
    Case("buffer_mb_nan", predict("--buffer-mb", "nan"), says=("--buffer-mb nan is not a finite number", "--buffer-mb 512")),
    Case("buffer_mb_inf", predict("--buffer-mb", "inf"), says=("--buffer-mb inf is not a finite number",)),
    Case("buffer_mb_1e308", predict("--buffer-mb", "1e308"), says=("--buffer-mb 1e308 is beyond", "--buffer-mb 512")),
    Case("min_area_nan", predict("--min-area", "nan"), says=("--min-area nan is not a finite number",)),
    Case("simplify_inf", predict("--simplify", "inf"), says=("--simplify inf is not a finite number",)),
    Case("simplify_negative", predict("--simplify", "-1"), says=("--simplify must be at least 0",)),
    Case("min_area_unknown_unit", predict("--min-area", "4pixels"),
         says=("--min-area '4pixels' is not a number with a unit", "--min-area 8px (pixels)")),
    Case("simplify_an_area", predict("--simplify", "1m2"), says=("--simplify '1m2' is not a number with a unit (m, px)",)),
    Case("min_area_and_simplify_in_pixels", predict("--vector", "{w}/out.gpkg", "--min-area", "8px", "--simplify", "1px"),
         code=0, before_load=False, old=()),
    Case("regularize_without_vector", predict("--regularize", "building"), says=("--regularize", "add --vector")),
    Case("polygon_options_without_vector", predict("--min-area", "5m2", "--simplify", "2px"),
         says=("--simplify, --min-area shape polygons, and none are written", "add --vector FILE.gpkg or drop them")),
    Case("window_batch_0_names_the_flag", predict("--window-batch", "0"), says=("use e.g. --window-batch 2",)),
    Case("output_under_proc", cmd("predict", "{u8}", "-m", "{ckpt}", "-o", "/proc/x.tif", "--tile", "64"),
         says=("output directory /proc", "writ")),
]

# -- QGIS styles: the sidecars are outputs, checked with the others before the model loads ------------
CASES += [
    Case("polygons_sharing_the_rasters_style_geojson", predict("--vector", "{w}/out.geojson"),
         old=("out.tif", "out.gpkg", "out.qml"),
         says=("would both need the QGIS style", "out.qml", "--vector", "out_polygons.geojson", ".gpkg")),
    Case("polygons_sharing_the_rasters_style_shapefile", predict("--vector", "{w}/out.shp"),
         old=("out.tif", "out.gpkg", "out.qml"), says=("would both need the QGIS style", "out_polygons.shp")),
    Case("raster_style_exists_without_overwrite", predict(overwrite=False), old=("out.qml",),
         says=("out.qml already exists", "--overwrite")),
    Case("polygons_style_exists_without_overwrite", predict("--vector", "{w}/polys.geojson", overwrite=False),
         old=("polys.qml",), says=("polys.qml already exists", "--overwrite")),
    Case("geopackage_with_the_rasters_stem", predict("--vector", "{w}/out.gpkg"), code=0, before_load=False, old=()),
]


CASES += [
    # -- vector references (polygons rasterised on the prediction's grid) ------------------------------
    Case("predict_vector_reference_with_an_unknown_class", predict("--reference", "{ref_house}"),
         says=("'house', which name no class", "0=background, 1=building")),
    Case("predict_reference_options_without_reference", predict("--attribute", "class_name"),
         says=("--attribute describe the --reference",)),
    Case("predict_unknown_object_class", predict("--reference", "{ref_gpkg}", "--object-classes", "roof"),
         says=("unknown object class 'roof'",)),
    Case("evaluate_vector_reference_with_an_unknown_class",
         cmd("evaluate", "{pred}", "{ref_house}", "--classes", "background,building", "-o", "{w}/rep"), old=(),
         says=("'house', which name no class",)),
    Case("evaluate_vector_reference_without_the_field",
         cmd("evaluate", "{pred}", "{ref_gpkg}", "--classes", "background,building", "--attribute", "kind", "-o",
             "{w}/rep"), old=(), says=("no field 'kind'", "its fields: class_name", "--class NAME")),
    Case("evaluate_vector_options_with_a_raster_reference",
         cmd("evaluate", "{pred}", "{mask}", "--classes", "a,b", "--class", "b", "-o", "{w}/rep"), old=(),
         says=("--class apply to a vector reference",)),
    Case("evaluate_vector_options_with_a_checkpoint", cmd("evaluate", "-m", "{ckpt}", "--layer", "x", "-o", "{w}/rep"),
         old=(), says=("--layer apply to evaluate PRED REF",)),
    Case("predict_vector_reference", predict("--reference", "{ref_gpkg}", "--report", "{w}/r.json"), code=0,
         before_load=False, old=()),
    Case("evaluate_vector_reference",
         cmd("evaluate", "{pred}", "{ref_gpkg}", "--classes", "background,building", "-o", "{w}/rep"), code=0,
         before_load=False, old=()),
]

# -- output names say the format: a GeoTIFF named .png, a report named .txt -----------------------------
CASES += [
    Case("class_raster_named_png", cmd("predict", "{u8}", "-m", "{ckpt}", "-o", "{w}/g.png"),
         says=("-o", "g.png", "not .png", ".tif or .tiff", "g.tif")),
    Case("class_raster_without_extension", cmd("predict", "{u8}", "-m", "{ckpt}", "-o", "{w}/classes"),
         says=("no extension", ".tif or .tiff")),
    Case("confidence_named_jpg", predict("--confidence", "{w}/c.jpg"), says=("--confidence", "not .jpg", ".tif or .tiff")),
    Case("report_named_txt", predict("--report", "{w}/r.txt"), says=("--report", "not .txt", ".json")),
    Case("vector_named_kml", predict("--vector", "{w}/b.kml"), says=(".kml", ".gpkg, .shp or .geojson")),
    Case("names_in_upper_case", cmd("predict", "{u8}", "-m", "{ckpt}", "-o", "{w}/G.TIFF", "--report", "{w}/R.JSON",
                                    "--tile", "64", "--overlap", "16"), code=0, before_load=False, old=()),
]


# -- exported .onnx models wherever a checkpoint goes: the same checks, ONNX Runtime as the engine ----------
def predict_onnx(*extra: str, src: str = "u8", model: str = "onnx"):
    """predict with an exported model; ``--engine auto`` because the tests' default engine is torch."""
    return predict("--engine", "auto", *extra, src=src, ckpt=model)


CASES += [
    Case("onnx_model", predict_onnx("--vector", "{w}/new.gpkg", "--report", "{w}/new.json"), code=0, before_load=False,
         old=()),
    Case("onnx_float_copy_in_the_training_range", predict_onnx(src="f255"), code=0, before_load=False, old=()),
    Case("onnx_model_on_dask", predict_onnx("--dask", "local:1"), code=0, before_load=False, old=()),
    Case("onnx_uint16_copy_of_uint8_scene", predict_onnx(src="u16"), says=("training range", "--scale 1/257")),
    Case("onnx_grayscale_for_rgb_model", predict_onnx(src="gray"), says=("1 band(s) but the model needs 3",)),
    Case("onnx_without_rsseg_metadata", predict_onnx(model="onnx_plain"),
         says=("plain.onnx is an ONNX model without rsseg metadata", "rsseg export -m best.ckpt -o plain.onnx")),
    Case("onnx_random_bytes", predict_onnx(model="onnx_random"), says=("cannot read model", "not an ONNX file")),
    Case("onnx_missing", cmd("predict", "{u8}", "-m", "{w}/nope.onnx", "-o", "{w}/out.tif", "--engine", "auto",
                             "--overwrite"), says=("model not found", "rsseg export")),
    Case("onnx_with_engine_torch", predict("--engine", "torch", ckpt="onnx"),
         says=("m.onnx is an ONNX model and runs in ONNX Runtime or OpenVINO", "--engine auto, onnx or openvino",
              ".ckpt it was exported from")),
    Case("onnx_on_cuda", predict("--engine", "auto", "--device", "cuda", ckpt="onnx"), says=("runs on the CPU, not cuda",)),
    Case("onnx_without_input_contract", predict_onnx(src="u16", model="onnx_old"),
         says=("model ", "old.onnx records no input contract", "export it again with `rsseg export`")),
    Case("onnx_dask_with_engine_torch", predict("--dask", "local:1", "--engine", "torch", ckpt="onnx"),
         says=("is an ONNX model",)),
    Case("evaluate_onnx_on_a_uint8_dataset", cmd("evaluate", "-m", "{onnx}", "--engine", "auto", "--root", "{ds8}",
                                                 "--tile", "64", "--overlap", "16", "-o", "{w}/rep"),
         code=0, before_load=False, old=()),
    Case("evaluate_onnx_on_a_uint16_dataset", cmd("evaluate", "-m", "{onnx}", "--engine", "auto", "--root", "{ds16}",
                                                  "-o", "{w}/rep"), old=(), says=("training range",)),
    Case("evaluate_onnx_with_engine_torch", cmd("evaluate", "-m", "{onnx}", "--engine", "torch", "--root", "{ds8}",
                                                "-o", "{w}/rep"), old=(), says=("is an ONNX model",)),
    Case("export_from_an_onnx_model", cmd("export", "-m", "{onnx}", "-o", "{w}/again.onnx"), old=(), before_load=False,
         says=("is an exported ONNX model, not a checkpoint", ".ckpt it was exported from")),
    Case("export_to_another_extension", cmd("export", "-m", "{ckpt}", "-o", "{w}/model.bin"), old=(),
         says=("a .onnx file", "must end in .onnx", "model.onnx")),
    Case("export_stac_onto_the_model", cmd("export", "-m", "{ckpt}", "-o", "{w}/m.onnx", "--stac", "{w}/m.onnx"), old=(),
         says=("--stac", "is the model file itself")),
]


def stac_no_datetime(a: dict[str, Path], w: Path) -> list[str]:
    """predict on a .json input pystac refuses: an item without properties.datetime."""
    item = w.parent / "no_datetime.json"
    item.write_text(json.dumps({"type": "Feature", "stac_version": "1.0.0", "id": "x", "properties": {},
                                "assets": {"visual": {"href": "x.tif"}}}))
    return ["predict", str(item), "-m", str(a["ckpt"]), "-o", str(w / "out.tif"), "--overwrite"]


CASES += [
    # -- STAC items with one asset per band ----------------------------------------------------------
    Case("stac_bands_on_two_grids", stac_bands("red,green,blue", coarse="blue"),
         says=("not on one grid", "blue: ", "choose assets of one resolution")),
    Case("stac_band_not_in_item", stac_bands("red,green,nir"), says=("has no asset 'nir'", "its assets: red")),
    Case("stac_bands_by_key_accepted", stac_bands("red,green,blue"), code=0, before_load=False, old=()),
    Case("stac_bands_by_band_name_accepted", stac_bands("B04,B03,B02"), code=0, before_load=False, old=()),
    Case("stac_item_without_datetime", stac_no_datetime,
         says=("is not a valid STAC item", "datetime")),
]


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (bytes) and folder (None) under ``root``, hidden ones included."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    """Records every model load (the CLI must refuse what it can before the first)."""
    calls: list[str] = []
    real = rsseg.checkpoint.load_model

    def counting(path, *args, **kwargs):
        calls.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(rsseg.checkpoint, "load_model", counting)
    return calls


@pytest.fixture
def clean_tmp(tmp_path, monkeypatch) -> Path:
    """A private temp dir for the run, checked empty afterwards."""
    tmp = tmp_path / "systmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_refusal_table(case: Case, assets, tmp_path, loads, clean_tmp):
    work = tmp_path / "work"
    work.mkdir()
    for name in case.old:
        (work / name).write_bytes(OLD)
    before, before_assets = _snapshot(work), _snapshot(assets["u8"].parent)
    res = CliRunner().invoke(main, case.args(assets, work))
    out = res.output
    assert res.exit_code == case.code, out
    for bad in case.never:
        assert bad not in out, out
    if case.code == 0:
        assert not _error_lines(out), out
        return
    lines = _error_lines(out)
    assert len(lines) == 1, out  # one line, no traceback
    for text in case.says:
        assert text in lines[0], lines[0]
    assert _snapshot(work) == before  # old outputs byte-identical, nothing new, no hidden temporary left
    assert _snapshot(assets["u8"].parent) == before_assets  # inputs untouched
    assert not list(clean_tmp.iterdir())
    if case.before_load:
        assert loads == [], f"the model loaded before the refusal: {loads}"


# -- 1: nodata, NaN and alpha never reach the model ----------------------------------------------
def _predict(assets, src: Path, out: Path, *extra: str, ckpt: str = "ckpt"):
    res = CliRunner().invoke(main, ["predict", str(src), "-m", str(assets[ckpt]), "-o", str(out), "--tile", "64",
                                    "--overlap", "16", "--confidence", str(out.with_suffix(".conf.tif")), *extra])
    assert res.exit_code == 0, res.output
    with rasterio.open(out) as c, rasterio.open(out.with_suffix(".conf.tif")) as f:
        return c.read(1), f.read(1)


def test_one_nan_pixel_changes_no_other_output_pixel(assets, tmp_path):
    with rasterio.open(assets["f255"]) as s:
        data, profile = s.read(), s.profile
    filled = data.copy()
    filled[:, 40, 50] = np.asarray([0.45, 0.45, 0.4])[:, None].ravel() * 255  # what a masked pixel becomes
    nan = data.copy()
    nan[1, 40, 50] = np.nan  # one band of one pixel
    for name, arr in (("filled.tif", filled), ("nan.tif", nan)):
        with rasterio.open(tmp_path / name, "w", **profile) as d:
            d.write(arr)
    ref_cls, ref_conf = _predict(assets, tmp_path / "filled.tif", tmp_path / "a.tif")
    cls, conf = _predict(assets, tmp_path / "nan.tif", tmp_path / "b.tif")
    assert cls[40, 50] == 255 and conf[40, 50] == 0
    ref_cls[40, 50], ref_conf[40, 50] = 255, 0
    assert np.array_equal(cls, ref_cls) and np.array_equal(conf, ref_conf)


def test_nodata_and_alpha_pixels_come_out_as_255(assets, tmp_path):
    with rasterio.open(assets["u8"]) as s:
        data, profile = s.read(), s.profile
    alpha = np.full((1, SIZE, SIZE), 255, np.uint8)
    alpha[0, :10, :20] = 0
    rgba = tmp_path / "rgba.tif"
    with rasterio.open(rgba, "w", **(profile | {"count": 4, "photometric": "RGB", "alpha": "YES"})) as d:
        d.write(np.concatenate([data, alpha]))
        d.colorinterp = [rasterio.enums.ColorInterp.red, rasterio.enums.ColorInterp.green,
                         rasterio.enums.ColorInterp.blue, rasterio.enums.ColorInterp.alpha]
    cls, conf = _predict(assets, rgba, tmp_path / "c.tif")
    assert (cls[:10, :20] == 255).all() and (conf[:10, :20] == 0).all()
    assert (cls[10:] != 255).all()
    nan_nodata = tmp_path / "nan_nodata.tif"
    arr = data.astype(np.float32)
    arr[:, 50:, 60:] = np.nan
    with rasterio.open(nan_nodata, "w", **(profile | {"dtype": "float32", "nodata": float("nan")})) as d:
        d.write(arr)
    cls, conf = _predict(assets, nan_nodata, tmp_path / "d.tif")
    assert (cls[50:, 60:] == 255).all() and (cls[:50] != 255).all() and (conf[50:, 60:] == 0).all()


def test_the_model_never_sees_a_non_finite_value(assets):
    from rsseg.inference import Predictor

    p = Predictor.from_checkpoint(assets["ckpt"], device="cpu", tile=64, overlap=16)
    with pytest.raises(InputRasterError, match="NaN or infinite"):
        p.predict_probs(torch.full((3, 64, 64), float("nan")))
    img = np.full((3, 64, 64), 100.0, np.float32)
    img[:, 3, 4] = np.inf
    cls = p.predict_array(img)
    assert cls[3, 4] == 255 and (np.delete(cls.ravel(), 3 * 64 + 4) != 255).all()


# -- 2: rescaling maps the input onto what the model was trained on -------------------------------
def test_rescaled_inputs_give_the_uint8_classes(assets, tmp_path):
    base, _ = _predict(assets, assets["u8"], tmp_path / "u8.tif")
    same, _ = _predict(assets, assets["f255"], tmp_path / "f255.tif")
    scaled, _ = _predict(assets, assets["u16"], tmp_path / "u16.tif", "--scale", "1/257")
    auto, _ = _predict(assets, assets["f01"], tmp_path / "f01.tif", "--scale", "auto")
    assert np.array_equal(base, same)
    assert (scaled != base).mean() < 0.001
    assert (auto != base).mean() < 0.05  # p1-p99 stretch: the same scene, the same range


def test_checkpoint_records_the_training_input(assets):
    meta = rsseg.checkpoint.read_meta(assets["ckpt"])
    assert meta.input_dtype == "uint8" and len(meta.input_range) == 3
    with rasterio.open(assets["u8"]) as s:
        data = s.read().reshape(3, -1)
    for (lo, hi), band in zip(meta.input_range, data):
        assert lo == pytest.approx(np.percentile(band, 1)) and hi == pytest.approx(np.percentile(band, 99))
    old = rsseg.checkpoint.read_meta(assets["old_ckpt"])
    assert old.input_dtype is None and old.input_range is None


# -- 8: all or nothing ----------------------------------------------------------------------------
@pytest.mark.parametrize(("stage", "target"), [("vector", "out.gpkg"), ("class_raster", "out.tif"), ("report", "out.json")])
def test_disk_full_while_writing_leaves_old_outputs_intact(stage, target, assets, tmp_path, monkeypatch, clean_tmp):
    import geopandas as gpd
    import rasterio.shutil

    import rsseg.inference.products

    work = tmp_path / "work"
    work.mkdir()
    targets = ["out.tif", "out.conf.tif", "out.gpkg", "out.json"]
    for name in targets:
        (work / name).write_bytes(OLD)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if stage == "vector":
        monkeypatch.setattr(gpd.GeoDataFrame, "to_file", full)
    elif stage == "class_raster":
        monkeypatch.setattr(rasterio.shutil, "copy", full)
    else:
        monkeypatch.setattr(rsseg.inference.products, "write_json", full)
    res = CliRunner().invoke(main, ["predict", str(assets["u8"]), "-m", str(assets["ckpt"]), "-o", str(work / "out.tif"),
                                    "--confidence", str(work / "out.conf.tif"), "--vector", str(work / "out.gpkg"),
                                    "--report", str(work / "out.json"), "--tile", "64", "--overlap", "16", "--overwrite"])
    assert res.exit_code == 2, res.output
    lines = _error_lines(res.output)
    assert len(lines) == 1 and "no space left on device" in lines[0] and "Traceback" not in res.output
    assert str(work / target) in lines[0], lines[0]  # names the output it could not write
    assert sorted(p.name for p in work.iterdir()) == sorted(targets)  # no temporary file or folder left
    assert all((work / name).read_bytes() == OLD for name in targets)
    assert not list(clean_tmp.iterdir())


def test_outputs_are_replaced_together_when_all_succeed(assets, tmp_path):
    for name in ("out.tif", "out_polygons.shp", "out.json"):
        (tmp_path / name).write_bytes(OLD)
    (tmp_path / "out_polygons.cpg").write_bytes(OLD)  # a stale shapefile part
    res = CliRunner().invoke(main, ["predict", str(assets["u8"]), "-m", str(assets["ckpt"]), "-o", str(tmp_path / "out.tif"),
                                    "--vector", str(tmp_path / "out_polygons.shp"), "--report", str(tmp_path / "out.json"),
                                    "--tile", "64", "--overlap", "16", "--overwrite"])
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert not [n for n in names if n.startswith(".")]
    assert all((tmp_path / n).read_bytes() != OLD for n in names if n.startswith("out") and (tmp_path / n).exists())


# -- 7: SIGTERM cleans up like Ctrl-C ----------------------------------------------------------------
def test_sigterm_during_predict_leaves_no_temporary_folder(assets, tmp_path):
    big = tmp_path / "big.tif"
    with rasterio.open(assets["u8"]) as s:
        data, profile = s.read(), s.profile
    tiled = np.tile(data, (1, 8, 8))
    with rasterio.open(big, "w", **(profile | {"width": tiled.shape[2], "height": tiled.shape[1]})) as d:
        d.write(tiled)
    out = tmp_path / "out" / "classes.tif"
    out.parent.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "rsseg.cli.main", "predict", str(big), "-m", str(assets["ckpt"]),
                             "-o", str(out), "--tile", "64", "--overlap", "16", "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while not any(p.name.startswith(".") for p in out.parent.iterdir()):
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline, "predict never started writing"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=300)
    assert code != 0
    assert list(out.parent.iterdir()) == []


# -- 11: the viewer's pixel limit and complete uploads -----------------------------------------------
def test_viewer_refuses_a_small_file_declaring_a_huge_raster(tmp_path, monkeypatch):
    from rsseg import viewer

    sparse = tmp_path / "sparse.tif"
    with rasterio.open(sparse, "w", driver="GTiff", width=100_000, height=100_000, count=1, dtype="uint8",
                       tiled=True, blockxsize=512, blockysize=512, sparse_ok=True, compress="deflate"):
        pass
    assert sparse.stat().st_size < 2_000_000
    with pytest.raises(InputRasterError, match="viewer's limit"):
        viewer.check_raster(sparse)
    with pytest.raises(InputRasterError, match="viewer's limit"):
        viewer.save_upload(sparse.read_bytes(), "sparse.tif", tmp_path / "up", max_mb=10)
    assert not (tmp_path / "up").exists() or not list((tmp_path / "up").iterdir())
    small = write_raster(tmp_path / "small.tif", np.zeros((1, 100, 100), np.uint8))
    viewer.check_raster(small)
    monkeypatch.setenv("RSSEG_MAX_PIXELS", "5000")  # configurable: `rsseg app --max-pixels`
    with pytest.raises(InputRasterError, match="limit is 5,000"):
        viewer.check_raster(small)
    assert viewer.AppSettings.from_env({"RSSEG_DATA_DIR": str(tmp_path), "RSSEG_MAX_PIXELS": "123"}).max_pixels == 123


def test_viewer_refuses_a_truncated_upload_when_it_arrives(assets, tmp_path):
    from rsseg import viewer

    with pytest.raises(InputRasterError, match="truncated or corrupt"):
        viewer.save_upload(assets["truncated"].read_bytes(), "cut.tif", tmp_path / "up", max_mb=10)
    assert not list((tmp_path / "up").iterdir())


def test_viewer_refuses_an_input_outside_the_training_range(assets, tmp_path):
    from rsseg import viewer

    with pytest.raises(InputRasterError, match="training range"):
        viewer.run_prediction(assets["u16"], assets["ckpt"], tmp_path / "cache", tile=64, overlap=16)


def test_pickled_code_in_a_checkpoint_never_runs(assets, tmp_path, capfd):
    res = CliRunner().invoke(main, ["predict", str(assets["u8"]), "-m", str(assets["ckpt_code"]), "-o",
                                    str(tmp_path / "o.tif")])
    assert res.exit_code == 2 and "pwned" not in res.output and "pwned" not in capfd.readouterr().out


# -- unwritable targets and full disks: one line naming the path -------------------------------------
@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_refused_before_the_model_loads(assets, tmp_path, loads):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        res = CliRunner().invoke(main, ["predict", str(assets["u8"]), "-m", str(assets["ckpt"]), "-o", str(out / "c.tif")])
    finally:
        out.chmod(0o755)
    assert res.exit_code == 2 and len(_error_lines(res.output)) == 1 and "not writable" in res.output, res.output
    assert loads == [] and not list(out.iterdir())


def test_a_gdal_write_error_on_a_full_disk_names_it(tmp_path, monkeypatch):
    import shutil
    from types import SimpleNamespace

    from rasterio.errors import RasterioIOError

    from rsseg.io import write_error

    exc = RasterioIOError("TIFFWriteEncodedTile:Write error at row 0, col 0, tile 3")  # GDAL gives no errno
    assert "no space left" not in str(write_error(exc, "class raster", tmp_path / "out.tif"))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=10, used=10, free=0))
    err = str(write_error(exc, "class raster", tmp_path / "out.tif"))
    assert "no space left on device" in err and str(tmp_path / "out.tif") in err

# -- models without an input contract: refused everywhere, and the command the refusal names adds one ---
def test_viewer_refuses_a_checkpoint_without_an_input_contract(assets, tmp_path):
    from rsseg import viewer
    from rsseg.errors import CheckpointError

    with pytest.raises(CheckpointError, match="records no input contract"):
        viewer.run_prediction(assets["u8"], assets["old_ckpt"], tmp_path / "cache", tile=64, overlap=16)
    assert not (tmp_path / "cache").exists()


def test_import_calibrate_adds_the_contract_the_refusal_asks_for(assets, tmp_path):
    fixed = tmp_path / "fixed.ckpt"
    res = CliRunner().invoke(main, ["import", str(assets["old_ckpt"]), "--calibrate", str(assets["u8"]), "-o", str(fixed)])
    assert res.exit_code == 0, res.output
    assert "input contract: uint8" in res.output
    meta, old = rsseg.checkpoint.read_meta(fixed), rsseg.checkpoint.read_meta(assets["old_ckpt"])
    assert meta.input_range == rsseg.checkpoint.read_meta(assets["ckpt"]).input_range  # measured as training does
    assert meta.classes == old.classes and meta.config == old.config
    res = CliRunner().invoke(main, ["predict", str(assets["u16"]), "-m", str(fixed), "-o", str(tmp_path / "o.tif")])
    assert res.exit_code == 2 and "training range" in res.output, res.output
    res = CliRunner().invoke(main, ["predict", str(assets["u8"]), "-m", str(fixed), "-o", str(tmp_path / "o.tif"),
                                    "--tile", "64", "--overlap", "16"])
    assert res.exit_code == 0, res.output
    # a calibration scene the model's normalisation cannot have been made for, flags that only fit GeoSeg
    # weights, or no scene at all: refused, nothing written
    for args, says in ((["--calibrate", str(assets["f01"])], "p99 is"),
                       (["--calibrate", str(assets["u8"]), "--dataset", "potsdam"], "--dataset apply to GeoSeg"),
                       ([], "--calibrate SCENE")):
        res = CliRunner().invoke(main, ["import", str(assets["old_ckpt"]), *args, "-o", str(tmp_path / "x.ckpt")])
        assert res.exit_code == 2 and says in res.output and len(_error_lines(res.output)) == 1, res.output
        assert not (tmp_path / "x.ckpt").exists()


def test_predict_scores_polygons_like_the_mask_they_rasterise_to(assets, tmp_path):
    with rasterio.open(assets["mask"]) as s:
        mask = np.zeros((s.height, s.width), np.uint8)
        transform, crs = s.transform, s.crs
    mask[20:50, 20:50] = 1  # the footprint of ref_gpkg, its edges on pixel borders
    ref_tif = write_raster(tmp_path / "ref.tif", mask, crs=crs, transform=transform)
    metrics = {}
    for name, ref in (("raster", ref_tif), ("vector", assets["ref_gpkg"])):
        res = CliRunner().invoke(main, ["predict", str(assets["u8"]), "-m", str(assets["ckpt"]), "-o",
                                        str(tmp_path / f"{name}.tif"), "--tile", "64", "--overlap", "16",
                                        "--reference", str(ref), "--report", str(tmp_path / f"{name}.json")])
        assert res.exit_code == 0, res.output
        assert "objects of building (IoU >= 0.5)" in res.output
        metrics[name] = json.loads((tmp_path / f"{name}.json").read_text())["metrics"]
    assert metrics["vector"].pop("vector_reference")["features"] == 1
    assert metrics["vector"] == metrics["raster"]
    assert metrics["raster"]["objects"]["per_class"][0]["reference_objects"] == 1

def test_app_refuses_a_busy_port_it_was_given_before_printing_its_url(tmp_path, monkeypatch):
    import socket

    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("the server must not start"))
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        busy = held.getsockname()[1]
        res = CliRunner().invoke(main, ["app", "--data-dir", str(tmp_path), "--port", str(busy), "--headless"])
    assert res.exit_code == 2 and len(_error_lines(res.output)) == 1, res.output
    assert f"port {busy} on 127.0.0.1 is already in use" in res.output and "--port" in res.output
    assert "http://" not in res.output  # no URL that leads nowhere


def test_viewer_neither_lists_nor_opens_a_symlink_that_leads_outside_its_data_dir(tmp_path):
    from rsseg import viewer
    from rsseg.errors import InputNotFoundError

    data, outside = tmp_path / "data", tmp_path / "outside"
    data.mkdir()
    outside.mkdir()
    write_raster(outside / "scene.tif", np.zeros((3, 8, 8), np.uint8))
    (data / "scenes").symlink_to(outside, target_is_directory=True)
    assert viewer.list_files(data, viewer.RASTER_SUFFIXES) == [] and viewer.links_outside(data) == ["scenes"]
    with pytest.raises(InputNotFoundError, match="outside the data directory.*--data-dir"):
        viewer.resolve_under(data, "scenes/scene.tif")
