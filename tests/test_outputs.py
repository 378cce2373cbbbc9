"""Outputs as a GIS analyst opens them: RFC 7946 GeoJSON, layer names, GDAL attribute table and
QGIS styles, the polygon classes and minimum area, the confidence scale, and warnings when the
input does not look like the model's training data."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import torch
from affine import Affine
from click.testing import CliRunner
from conftest import uint8_contract, write_raster
from torch import nn

from rsseg.checkpoint import ModelMeta, save_model
from rsseg.cli.main import main
from rsseg.config import Config
from rsseg.errors import InputRasterError, OutputPathError, RsSegError
from rsseg.inference import Predictor, polygonize, predict_file
from rsseg.inference.vectorize import default_vector_classes, parse_vector_classes

CLASSES = ["background", "building", "road"]
COLORS = ["#000000", "#ff0000", "#ffff00"]


class Painted(nn.Module):
    """Logits that copy a fixed class map onto every window: band 0 of the input holds the class id
    (x 50), so the prediction is exactly the map painted into the image (ids beyond ``k`` classes clamped)."""

    def __init__(self, k: int = len(CLASSES)) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls = torch.round((x[:, 0] * 0.25 + 0.5) * 255 / 50).long().clamp(0, self.k - 1)
        return torch.nn.functional.one_hot(cls, self.k).permute(0, 3, 1, 2).float() * 10


def meta(gsd: float | None = 2.0, dataset: str = "folder", classes: list[str] = CLASSES,
         colors: list[str] = COLORS) -> ModelMeta:
    cfg = Config().to_dict()
    cfg["dataset"]["name"] = dataset
    return ModelMeta(classes=classes, colors=colors, bands=["red", "green", "blue"], mean=[0.5] * 3, std=[0.25] * 3,
                     gsd=gsd, patch_size=64, config=cfg, **uint8_contract())


def predictor(gsd: float | None = 2.0) -> Predictor:
    return Predictor.from_model(Painted(), meta(gsd), tile=64, overlap=16, batch=2, device="cpu")


def class_map() -> np.ndarray:
    """80 x 90: background, a 20 x 30 building, a road strip, a 1-pixel and a 3-pixel building speck."""
    cls = np.zeros((80, 90), np.uint8)
    cls[10:30, 10:40] = 1
    cls[50:56, :] = 2
    cls[70, 70] = 1
    cls[70:73, 80] = 1
    return cls


def painted_image(path: Path, cls: np.ndarray, **kw) -> Path:
    img = np.stack([cls * 50, np.full_like(cls, 100), np.full_like(cls, 100)]).astype(np.uint8)
    return write_raster(path, img, **kw)


# ------------------------------------------------------------------ 1. GeoJSON and layer names
def test_geojson_is_rfc7946_in_wgs84_and_every_layer_is_named_after_its_file(tmp_path):
    src = painted_image(tmp_path / "in.tif", class_map())
    p = predictor()
    for ext in (".geojson", ".gpkg", ".shp"):
        (tmp_path / ext[1:]).mkdir()
        vector = tmp_path / ext[1:] / f"buildings{ext}"
        predict_file(p, src, tmp_path / f"cls{ext[1:]}.tif", vector_path=vector, min_area=0)
        layers = pyogrio.list_layers(vector)[:, 0].tolist()
        # (a GeoPackage also holds QGIS's layer_styles table, after the data layer that readers open)
        assert layers == (["buildings", "layer_styles"] if ext == ".gpkg" else ["buildings"])
    doc = json.loads((tmp_path / "geojson" / "buildings.geojson").read_text())
    assert "crs" not in doc and doc["name"] == "buildings"
    coords = np.array([xy for f in doc["features"] for ring in f["geometry"]["coordinates"] for xy in ring])
    # UTM 33N easting 500 km at 100 km north: longitude 15 E, latitude 0.9 N
    assert np.allclose(coords[:, 0], 15.0, atol=0.01) and np.allclose(coords[:, 1], 0.904, atol=0.01)
    import shapely.geometry

    for f in doc["features"]:  # RFC 7946 section 3.1.6: exterior rings counter-clockwise
        assert shapely.geometry.shape(f["geometry"]).exterior.is_ccw
    building = [f for f in doc["features"] if f["properties"]["class_name"] == "building"]
    assert max(f["properties"]["area_m2"] for f in building) == pytest.approx(20 * 30 * 4, rel=1e-3)


# ------------------------------------------------------------------ 2. attribute table and QGIS styles
def _gdalinfo(path: Path) -> dict:
    if shutil.which("gdalinfo") is None:
        if os.environ.get("RSSEG_REQUIRE_GDAL"):
            pytest.fail("gdalinfo is missing (apt-get install gdal-bin)")
        pytest.skip("gdalinfo is not installed (apt-get install gdal-bin); CI installs it")
    return json.loads(subprocess.run(["gdalinfo", "-json", str(path)], check=True, capture_output=True, text=True).stdout)


def qgis_default_style(gpkg: Path, layer: str) -> ET.Element | None:
    """The style QGIS applies when it opens ``layer`` of ``gpkg``, found the way QGIS looks it up:
    the newest ``layer_styles`` row with an empty catalog and schema, the layer's table and its
    geometry column as the GeoPackage registers it (``gpkg_geometry_columns``), ``useAsDefault`` 1."""
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(gpkg)) as db:
        row = db.execute(
            "SELECT s.styleQML FROM layer_styles s JOIN gpkg_geometry_columns g "
            "ON s.f_table_name = g.table_name AND s.f_geometry_column = g.column_name "
            "WHERE g.table_name = ? AND s.f_table_catalog = '' AND s.f_table_schema = '' AND s.useAsDefault = 1 "
            "ORDER BY s.update_time DESC LIMIT 1", (layer,)).fetchone()
    return None if row is None else ET.fromstring(row[0].split("\n", 1)[1])  # (after the DOCTYPE line)


def test_class_raster_attribute_table_and_styles_read_back_by_gdal_and_qgis_xml(tmp_path):
    src = painted_image(tmp_path / "in.tif", class_map())
    predict_file(predictor(), src, tmp_path / "classes.tif", vector_path=tmp_path / "buildings.gpkg",
                 confidence_path=tmp_path / "conf.tif")
    info = _gdalinfo(tmp_path / "classes.tif")
    assert info["bands"][0]["categories"] == CLASSES
    rat = info["rat"]
    assert [f["name"] for f in rat["fieldDefn"]] == ["Value", "Class", "Red", "Green", "Blue", "Alpha"]
    assert [r["f"] for r in rat["row"]] == [[0, "background", 0, 0, 0, 255], [1, "building", 255, 0, 0, 255],
                                            [2, "road", 255, 255, 0, 255]]
    # QGIS paletted style beside the raster: one labelled entry per class, in the checkpoint's colours
    qml = ET.parse(tmp_path / "classes.qml").getroot()
    entries = [(e.get("value"), e.get("label"), e.get("color")) for e in qml.iter("paletteEntry")]
    assert entries == [("0", "background", "#000000"), ("1", "building", "#ff0000"), ("2", "road", "#ffff00")]
    assert qml.find("pipe/rasterrenderer").get("type") == "paletted"
    # nodata (255) is transparent: in the colour table (gdalinfo) and in the QGIS style; every class
    # of a three-class model is opaque (only a binary model's background is not, next test)
    band = info["bands"][0]
    assert band["noDataValue"] == 255 and band["colorTable"]["entries"][255] == [0, 0, 0, 0]
    assert [e[3] for e in band["colorTable"]["entries"][:3]] == [255, 255, 255]
    assert [e.get("alpha") for e in qml.iter("paletteEntry")] == ["255", "255", "255"]
    assert [(p.get("min"), p.get("max"), p.get("percentTransparent")) for p in qml.iter("pixelListEntry")] == [
        ("255", "255", "100")]
    # the GeoPackage keeps its style inside (QGIS's layer_styles table), found by QGIS's own lookup:
    # the row must name the layer's real geometry column, not one rsseg assumes
    vqml = qgis_default_style(tmp_path / "buildings.gpkg", "buildings")
    assert vqml is not None, pyogrio.read_dataframe(tmp_path / "buildings.gpkg", layer="layer_styles")
    cats = [(c.get("value"), c.get("symbol")) for c in vqml.iter("category")]
    assert cats == [("building", "0"), ("road", "1")]  # background is not polygonised by default
    colors = {s.get("name"): o.get("value") for s in vqml.iter("symbol") for o in s.iter("Option")
              if o.get("name") == "color"}
    assert colors == {"0": "255,0,0,255", "1": "255,255,0,255"}
    # confidence: scale/offset so 0-255 reads as 0-1, with a description
    conf = _gdalinfo(tmp_path / "conf.tif")["bands"][0]
    assert conf["scale"] == pytest.approx(1 / 255) and conf["offset"] == 0
    assert conf["description"].startswith("confidence")
    with rasterio.open(tmp_path / "conf.tif") as ds:
        assert ds.scales == pytest.approx((1 / 255,)) and ds.units == ("probability",)
        assert (ds.read(1)[ds.read_masks(1) > 0] * ds.scales[0]).max() <= 1.0


def test_sidecars_are_targets_refused_without_overwrite_and_geojson_gets_a_qml(tmp_path):
    src = painted_image(tmp_path / "in.tif", class_map())
    (tmp_path / "classes.qml").write_text("my own style")
    with pytest.raises(RsSegError, match="classes.qml already exists"):
        predict_file(predictor(), src, tmp_path / "classes.tif")
    assert not (tmp_path / "classes.tif").exists() and (tmp_path / "classes.qml").read_text() == "my own style"
    predict_file(predictor(), src, tmp_path / "classes.tif", vector_path=tmp_path / "polys.geojson", overwrite=True)
    assert "paletted" in (tmp_path / "classes.qml").read_text()
    assert "categorizedSymbol" in (tmp_path / "polys.qml").read_text()
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_polygons_sharing_the_class_rasters_stem_are_refused_unless_a_geopackage(tmp_path):
    """QGIS loads a style by itself only from ``<stem>.qml``: ``same.tif`` and ``same.geojson`` (or a
    later ``same.shp``) cannot both have theirs, so the run is refused before any work, with
    --overwrite too, rather than losing the polygons' style; a GeoPackage keeps its style inside."""
    src = painted_image(tmp_path / "in.tif", class_map())
    out = tmp_path / "out"
    out.mkdir()
    predict_file(predictor(), src, out / "same.tif", vector_path=out / "other.geojson")
    before = _files(out)
    for ext in (".geojson", ".shp"):
        for overwrite in (False, True):
            with pytest.raises(OutputPathError, match=(
                    rf"the class raster .*same\.tif and the polygons .*same\{ext} would both need the QGIS style "
                    rf".*same\.qml; give the polygons a name of their own \(e\.g\. --vector .*same_polygons\{ext}\) "
                    r"or write a \.gpkg")):
                predict_file(predictor(), src, out / "same.tif", vector_path=out / f"same{ext}", overwrite=overwrite)
            assert _files(out) == before  # nothing new, nothing replaced, no temporary left
    predict_file(predictor(), src, out / "same.tif", vector_path=out / "same.gpkg", overwrite=True)
    assert "paletted" in (out / "same.qml").read_text()
    assert qgis_default_style(out / "same.gpkg", "same") is not None


def test_a_binary_models_background_is_transparent_a_land_cover_map_stays_opaque(tmp_path):
    """Buildings over the image: the background of a background/building model is clear in the
    attribute table and both QGIS styles; LoveDA's background is land cover."""
    from rsseg.data.datasets import get_dataset
    from rsseg.inference.styles import transparent_classes

    binary = meta(classes=["background", "building"], colors=["#000000", "#ff3030"])
    src = painted_image(tmp_path / "in.tif", class_map())
    p = Predictor.from_model(Painted(2), binary, tile=64, overlap=16, batch=2, device="cpu")
    predict_file(p, src, tmp_path / "b.tif", vector_path=tmp_path / "b_polygons.geojson",
                 vector_classes="background,building")
    with rasterio.open(tmp_path / "b.tif") as ds:
        cmap = ds.colormap(1)
        assert cmap[255] == (0, 0, 0, 0)  # (a TIFF palette holds no alpha: GDAL reads the classes opaque)
    qml = ET.parse(tmp_path / "b.qml").getroot()
    assert [(e.get("label"), e.get("alpha")) for e in qml.iter("paletteEntry")] == [("background", "0"), ("building", "255")]
    vqml = ET.parse(tmp_path / "b_polygons.qml").getroot()  # the polygons' style: background listed, drawn clear
    assert {s.get("name"): o.get("value") for s in vqml.iter("symbol") for o in s.iter("Option") if o.get("name") == "color"} == {
        "0": "0,0,0,0", "1": "255,48,48,255"}
    assert transparent_classes(list(get_dataset("loveda").classes)) == set()
    assert transparent_classes(CLASSES) == set() and transparent_classes(["water", "land"]) == set()
    # the attribute table as GDAL reads it (last: skipped where gdalinfo is missing)
    assert [r["f"] for r in _gdalinfo(tmp_path / "b.tif")["rat"]["row"]] == [[0, "background", 0, 0, 0, 0],
                                                                        [1, "building", 255, 48, 48, 255]]


# ------------------------------------------------------------------ 3. polygon classes and minimum area
def test_default_vector_classes_leave_out_the_background():
    assert default_vector_classes(CLASSES) == [1, 2]
    isprs = ["impervious_surfaces", "building", "low_vegetation", "tree", "car", "clutter"]
    assert default_vector_classes(isprs, "potsdam") == [0, 1, 2, 3, 4]  # clutter is ISPRS's background
    assert default_vector_classes(["water", "land"], "folder") == [1]  # a user's folder: class 0
    assert default_vector_classes(["building"]) == [0]
    assert parse_vector_classes("Road, building", CLASSES) == [1, 2]
    assert parse_vector_classes([2, "1"], CLASSES) == [1, 2]
    with pytest.raises(RsSegError, match="unknown vector class 'roads'.*1=building"):
        parse_vector_classes("building,roads", CLASSES)


def test_vector_classes_and_default_minimum_area(tmp_path):
    src = painted_image(tmp_path / "in.tif", class_map())
    path = tmp_path / "classes.tif"
    predict_file(predictor(), src, path, vector_path=tmp_path / "all.gpkg")
    import geopandas as gpd

    default = gpd.read_file(tmp_path / "all.gpkg", layer="all")
    # no background polygon, and the 1- and 3-pixel specks are under the default 4-pixel minimum
    assert sorted(default.class_name) == ["building", "road"]
    every = polygonize(path, CLASSES, min_area=0)
    # (the road strip cuts the background in two)
    assert sorted(every.class_name) == ["background", "background", "building", "building", "building", "road"]
    assert sorted(polygonize(path, CLASSES, min_area=0, simplify=0, classes=[1]).area_m2) \
        == pytest.approx([4, 12, 2400], rel=1e-3)
    predict_file(predictor(), src, path, vector_path=tmp_path / "roads.gpkg", vector_classes="road", overwrite=True)
    assert gpd.read_file(tmp_path / "roads.gpkg", layer="roads").class_name.tolist() == ["road"]
    with pytest.raises(RsSegError, match="unknown vector class"):
        predict_file(predictor(), src, path, vector_path=tmp_path / "x.gpkg", vector_classes="roof", overwrite=True)


# ------------------------------------------------------------------ 5. input unlike the training data
def test_resolution_far_from_the_checkpoint_gsd_warns_and_strict_refuses(tmp_path):
    src = painted_image(tmp_path / "in.tif", class_map())  # 2 m pixels
    out = tmp_path / "classes.tif"
    with pytest.warns(UserWarning, match=r"2 m pixels but the model was trained on 0.3 m pixels \(6.67x coarser\)"):
        predict_file(predictor(gsd=0.3), src, out)
    with pytest.raises(InputRasterError, match="--strict"):
        predict_file(predictor(gsd=0.3), src, out, overwrite=True, strict=True)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predict_file(predictor(gsd=1.5), src, out, overwrite=True, strict=True)  # within 2x: silent
        predict_file(predictor(gsd=None), src, out, overwrite=True)  # no gsd stored: nothing to compare
    # geographic CRS: 1e-5 degree pixels at the equator are about 1.1 m (geodesic), not "1e-5 m"
    geo = painted_image(tmp_path / "geo.tif", class_map(), crs="EPSG:4326",
                        transform=Affine(1e-5, 0, 10.0, 0, -1e-5, 0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predict_file(predictor(gsd=1.0), geo, tmp_path / "geo_cls.tif")
    with pytest.warns(UserWarning, match=r"1.11 m pixels.*0.1 m"):
        predict_file(predictor(gsd=0.1), geo, tmp_path / "geo_cls.tif", overwrite=True)


def test_band_names_and_extra_bands_warn(tmp_path):
    cls = class_map()
    img = np.stack([cls * 50, np.full_like(cls, 100), np.full_like(cls, 100), np.full_like(cls, 7)]).astype(np.uint8)
    src = write_raster(tmp_path / "in.tif", img)
    with rasterio.open(src, "r+") as ds:
        for i, name in enumerate(["nir", "red", "green", "blue"], 1):
            ds.set_band_description(i, name)
    with pytest.warns(UserWarning) as record:
        predict_file(predictor(), src, tmp_path / "a.tif")
    text = " | ".join(str(w.message) for w in record)
    assert "described as nir, red, green but the model reads them as red, green, blue" in text
    assert "ignores" not in text  # (GDAL made band 4 of this 4-band uint8 file an alpha band: not an image band)
    with pytest.warns(UserWarning, match="alpha"):
        predict_file(predictor(), src, tmp_path / "alpha.tif", bands=[2, 3, 4])
    with rasterio.open(src, "r+") as ds:
        ds.colorinterp = [rasterio.enums.ColorInterp.gray] * 4
    with pytest.warns(UserWarning) as record:
        predict_file(predictor(), src, tmp_path / "a.tif", overwrite=True)
    assert any("has 4 bands; the model reads bands 1, 2, 3 as red, green, blue and ignores band(s) 4"
               in str(w.message) for w in record)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predict_file(predictor(), src, tmp_path / "b.tif", bands=[2, 3, 4])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A real (untrained) UNetFormer checkpoint trained, it says, on 0.3 m pixels."""
    from rsseg.config import ModelConfig
    from rsseg.models import build_model

    model = build_model(ModelConfig(), num_classes=len(CLASSES), in_channels=3).eval()
    return save_model(tmp_path_factory.mktemp("ckpt") / "m.ckpt", model, meta(gsd=0.3))


def test_cli_vector_classes_strict_and_warnings_shown(checkpoint, tmp_path):
    ckpt = checkpoint
    src = painted_image(tmp_path / "in.tif", class_map())
    res = CliRunner().invoke(main, ["predict", str(src), "-m", str(ckpt), "-o", str(tmp_path / "c.tif"),
                                    "--vector", str(tmp_path / "v.geojson"), "--vector-classes", "building",
                                    "--min-area", "0"])
    assert res.exit_code == 0, res.output
    assert "warning: in.tif has 2 m pixels but the model was trained on 0.3 m pixels" in res.output
    assert {f["properties"]["class_name"] for f in json.loads((tmp_path / "v.geojson").read_text())["features"]} \
        <= {"building"}
    res = CliRunner().invoke(main, ["predict", str(src), "-m", str(ckpt), "-o", str(tmp_path / "d.tif"), "--strict"])
    assert res.exit_code == 2 and "refused because of --strict" in res.output
    assert not (tmp_path / "d.tif").exists()
    help_text = CliRunner().invoke(main, ["predict", "--help"]).output
    assert "--vector-classes" in help_text and "background" in help_text and "scale 1/255" in help_text



def test_the_300_m_landsat_scene_is_flagged_for_a_7_5_cm_building_model(shared_data):
    from rsseg.inference.input_checks import check_model_fit, model_fit_problems

    building_model = meta(gsd=0.075)
    with rasterio.open(shared_data / "landsat" / "RGB.byte.tif") as src:
        problems = model_fit_problems(src, building_model, [1, 2, 3])
        assert len(problems) == 1 and re.search(r"has 300 m pixels but the model was trained on 0.075 m pixels "
                                                r"\(3,99\dx coarser\)", problems[0]), problems
        # a 4,000x resampling is no advice: the model does not fit this scene
        assert "does not fit this data" in problems[0] and "rsseg train" in problems[0] and "gdalwarp" not in problems[0]
        with pytest.raises(InputRasterError, match="refused because of --strict"):
            check_model_fit(src, building_model, [1, 2, 3], strict=True)


def test_resolution_within_4x_says_what_to_resample_to_and_beyond_that_the_model_does_not_fit(tmp_path):
    from rsseg.inference.input_checks import model_fit_problems

    with rasterio.open(painted_image(tmp_path / "in.tif", class_map())) as src:  # 2 m pixels
        def problem(gsd: float) -> list[str]:
            return model_fit_problems(src, meta(gsd=gsd), [1, 2, 3])

        assert problem(1.5) == [] and problem(3.9) == []  # within 2x: nothing to say
        assert problem(0.6) == ["in.tif has 2 m pixels but the model was trained on 0.6 m pixels (3.33x coarser), so its "
                                "classes and areas are unreliable; resample the input to 0.6 m pixels (gdalwarp -tr 0.6 0.6, "
                                "in a metre-based CRS) or use a model trained near 2 m"]
        assert "resample the input to 6 m pixels (gdalwarp -tr 6 6" in problem(6.0)[0]  # 3x finer
        coarse, fine = problem(0.3)[0], problem(10.0)[0]
    assert coarse == ("in.tif has 2 m pixels but the model was trained on 0.3 m pixels (6.67x coarser): the model does "
                      "not fit this data, and resampling 6.67x would invent detail the scene does not hold; use a model "
                      "trained on pixels near 2 m, or train one on such data (rsseg train)")
    assert fine.startswith("in.tif has 2 m pixels but the model was trained on 10 m pixels (5x finer): the model does not "
                           "fit this data, and resampling 5x would throw away most of its detail")
