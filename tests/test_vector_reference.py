"""Vector references rasterised on the prediction's grid, and per-object precision/recall/F1.

A synthetic scene with known buildings gives exact expected counts; the real Tanzania crop (its
mask in sample_tiles, its OpenStreetMap footprints in ../shared) checks that the GeoPackage
rasterises onto the mask pixel for pixel.
"""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from click.testing import CliRunner
from conftest import SAMPLE_TILES, write_raster
from rasterio.windows import Window

from rsseg.cli.main import main
from rsseg.errors import ConfigError, InputRasterError, LabelError
from rsseg.evaluation import evaluate_prediction
from rsseg.inference.references import VectorOptions, VectorReference
from rsseg.inference.styles import vector_qml
from rsseg.inference.vectorize import vectorize
from rsseg.metrics.objects import default_object_classes, match_objects, object_scores

#: 1 m pixels in UTM 33N
TRANSFORM = Affine(1.0, 0, 500000, 0, -1.0, 4000000)
SIZE = 64
CLASSES = ["background", "building"]
#: buildings as pixel boxes (col0, row0, col1, row1): A found exactly, B found 6 px off (IoU 0.25),
#: C missed, E found a little too tall (IoU 48/64 = 0.75), D predicted where there is none
REFERENCE = {"A": (5, 5, 15, 15), "B": (30, 5, 40, 15), "C": (5, 40, 15, 50), "E": (20, 30, 28, 36)}
PREDICTED = {"A": (5, 5, 15, 15), "B": (36, 5, 46, 15), "D": (50, 50, 60, 60), "E": (20, 30, 28, 38)}


def _pixels(boxes: dict[str, tuple[int, int, int, int]]) -> np.ndarray:
    arr = np.zeros((SIZE, SIZE), np.uint8)
    for c0, r0, c1, r1 in boxes.values():
        arr[r0:r1, c0:c1] = 1
    return arr


def _map_box(c0: int, r0: int, c1: int, r1: int) -> shapely.Polygon:
    (x0, y0), (x1, y1) = TRANSFORM @ (c0, r0), TRANSFORM @ (c1, r1)
    return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def _confusion(pred: np.ndarray, ref: np.ndarray) -> list[list[int]]:
    return np.bincount(ref.ravel().astype(int) * 2 + pred.ravel(), minlength=4).reshape(2, 2).tolist()


@pytest.fixture
def scene(tmp_path):
    """pred.tif (UTM) and ref.gpkg: the reference buildings stored in WGS 84, as OSM extracts come."""
    pred = write_raster(tmp_path / "pred.tif", _pixels(PREDICTED), transform=TRANSFORM)
    gdf = gpd.GeoDataFrame({"class_name": ["building"] * len(REFERENCE)},
                           geometry=[_map_box(*b) for b in REFERENCE.values()], crs="EPSG:32633")
    ref = tmp_path / "ref.gpkg"
    gdf.to_crs(4326).to_file(ref, layer="buildings", engine="pyogrio")
    return pred, ref


# -- the matching rule ------------------------------------------------------------------------
def test_object_scores_count_matches_at_iou_one_half():
    ref = [shapely.box(*b) for b in REFERENCE.values()]
    pred = [shapely.box(*b) for b in PREDICTED.values()]
    s = object_scores(ref, pred)
    assert (s.reference, s.predicted, s.tp, s.fp, s.fn) == (4, 4, 2, 2, 2)
    assert s.precision == s.recall == s.f1 == 0.5
    assert sorted((r, p, round(iou, 6)) for r, p, iou in match_objects(ref, pred)) == [(0, 0, 1.0), (3, 3, 0.75)]


def test_matching_is_one_to_one():
    # two copies of one reference footprint (a duplicated OSM way): one prediction finds one of them
    house = shapely.box(0, 0, 10, 10)
    s = object_scores([house, house], [house])
    assert (s.tp, s.fp, s.fn) == (1, 0, 1)
    # one reference, two candidates above the threshold: the better one is the match
    s = object_scores([house], [shapely.box(0, 0, 10, 9), shapely.box(0, 0, 10, 7)])
    assert (s.tp, s.fp, s.fn) == (1, 1, 0)
    assert match_objects([house], [shapely.box(0, 0, 10, 9), shapely.box(0, 0, 10, 7)])[0][1] == 0
    # exactly 0.5 counts (SpaceNet's rule), just below does not
    assert object_scores([house], [shapely.box(0, 0, 10, 5)]).tp == 1
    assert object_scores([house], [shapely.box(0, 0, 10, 4.99)]).tp == 0


def test_no_objects_means_no_evidence_not_zero():
    s = object_scores([], [])
    assert (s.precision, s.recall, s.f1) == (None, None, None)
    s = object_scores([], [shapely.box(0, 0, 1, 1)])
    assert (s.precision, s.recall, s.f1) == (0.0, None, 0.0)


def test_default_object_classes_are_the_building_classes():
    assert default_object_classes(["background", "Building", "road"]) == [1]
    assert default_object_classes(["impervious_surfaces", "building", "low_vegetation"]) == [1]
    assert default_object_classes(["water", "land"]) == []


# -- rasterising a vector reference ------------------------------------------------------------------
def test_vector_reference_rasterises_onto_the_grid_in_windows(scene):
    pred, ref = scene
    with rasterio.open(pred) as src, VectorReference(ref, src, CLASSES) as vref:
        whole = vref.read(1)
        pieces = np.vstack([np.hstack([vref.read(1, window=Window(c, r, min(24, SIZE - c), min(24, SIZE - r)))
                                       for c in range(0, SIZE, 24)]) for r in range(0, SIZE, 24)])
        assert vref.summary == {"path": str(ref), "layer": "buildings", "attribute": "class_name", "class": None,
                                "background": "background", "features": 4}
    np.testing.assert_array_equal(whole, _pixels(REFERENCE))  # reprojected from WGS 84, pixel centres inside
    np.testing.assert_array_equal(pieces, whole)


def test_evaluate_a_vector_reference(scene, tmp_path):
    pred, ref = scene
    out = tmp_path / "report"
    res = CliRunner().invoke(main, ["evaluate", str(pred), str(ref), "--classes", "background,building", "-o", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert report["confusion_matrix"] == _confusion(_pixels(PREDICTED), _pixels(REFERENCE))
    assert report["objects"]["iou_threshold"] == 0.5
    assert report["objects"]["per_class"] == [
        {"class": "building", "reference_objects": 4, "predicted_objects": 4, "tp": 2, "fp": 2, "fn": 2,
         "precision": 0.5, "recall": 0.5, "f1": 0.5}]
    assert report["vector_reference"]["attribute"] == "class_name"
    assert "| building | 4 | 4 | 2 | 2 | 2 | 50.00 | 50.00 | 50.00 |" in (out / "report.md").read_text()
    assert "| building | 4 | 4 | 2 | 2 | 2 |" in res.output


def test_a_reference_raster_scores_the_same_objects(scene, tmp_path):
    pred, _ = scene
    ref = write_raster(tmp_path / "ref.tif", _pixels(REFERENCE), transform=TRANSFORM)
    report = evaluate_prediction(pred, ref, tmp_path / "rep", class_names=CLASSES).report
    assert report["confusion_matrix"] == _confusion(_pixels(PREDICTED), _pixels(REFERENCE))
    row = report["objects"]["per_class"][0]
    assert (row["reference_objects"], row["predicted_objects"], row["tp"]) == (4, 4, 2)
    assert "vector_reference" not in report
    none = evaluate_prediction(pred, ref, tmp_path / "rep2", class_names=CLASSES, object_classes="none").report
    assert "objects" not in none


def test_one_class_for_every_feature_and_uncovered_pixels_ignored(scene, tmp_path):
    pred, ref = scene
    gdf = gpd.read_file(ref).drop(columns="class_name")
    gdf["kind"] = "roof"
    plain = tmp_path / "plain.geojson"
    gdf.to_file(plain, engine="pyogrio")
    with pytest.raises(InputRasterError, match=r"no field 'class_name'.*fields: kind.*--class NAME"):
        evaluate_prediction(pred, plain, tmp_path / "r0", class_names=CLASSES)
    report = evaluate_prediction(pred, plain, tmp_path / "r1", class_names=CLASSES,
                                 vector=VectorOptions(label_class="building", background="ignore")).report
    # only pixels under a footprint are scored: every one of them is building in the reference
    ref_px, pred_px = _pixels(REFERENCE), _pixels(PREDICTED)
    assert report["confusion_matrix"] == [[0, 0], [int((pred_px[ref_px == 1] == 0).sum()), int(pred_px[ref_px == 1].sum())]]
    assert report["vector_reference"]["background"] == "ignore"


def test_vector_reference_refusals(scene, tmp_path):
    pred, ref = scene
    gdf = gpd.read_file(ref)
    gdf.loc[0, "class_name"] = "house"
    gdf.loc[1, "class_name"] = "shed"
    odd = tmp_path / "odd.gpkg"
    gdf.to_file(odd, engine="pyogrio")
    with pytest.raises(LabelError, match=r"'house', 'shed', which name no class.*0=background, 1=building"):
        evaluate_prediction(pred, odd, tmp_path / "r", class_names=CLASSES)
    with pytest.raises(ConfigError, match="--background NAME"):
        evaluate_prediction(pred, ref, tmp_path / "r", class_names=["land", "building"])
    with pytest.raises(ConfigError, match="--background 'roads' is not a class"):
        evaluate_prediction(pred, ref, tmp_path / "r", class_names=CLASSES, vector=VectorOptions(background="roads"))
    with pytest.raises(ConfigError, match="not both"):
        evaluate_prediction(pred, ref, tmp_path / "r", class_names=CLASSES,
                            vector=VectorOptions(attribute="class_name", label_class="building"))
    with pytest.raises(InputRasterError, match="no layer 'roofs'"):
        evaluate_prediction(pred, ref, tmp_path / "r", class_names=CLASSES, vector=VectorOptions(layer="roofs"))
    bare = write_raster(tmp_path / "bare.tif", _pixels(PREDICTED), crs=None)
    with pytest.raises(InputRasterError, match="has no CRS"):
        evaluate_prediction(bare, ref, tmp_path / "r", class_names=CLASSES)
    with pytest.raises(ConfigError, match="--attribute apply to a vector reference"):
        evaluate_prediction(pred, pred, tmp_path / "r", class_names=CLASSES, vector=VectorOptions(attribute="x"))
    assert not (tmp_path / "r").exists()


def test_rssegs_own_polygons_are_a_reference(scene, tmp_path):
    # predict --vector writes a GeoPackage with a class_name field and a QGIS style table beside the layer
    pred, _ = scene
    vectorize(pred, tmp_path / "own.gpkg", CLASSES, classes=[1], style=vector_qml(["building"], ["#ff0000"]))
    report = evaluate_prediction(pred, tmp_path / "own.gpkg", tmp_path / "r", class_names=CLASSES).report
    assert report["OA"] == 1.0 and report["vector_reference"]["layer"] == "own"
    assert report["objects"]["per_class"][0]["tp"] == len(PREDICTED)


def test_several_layers_or_points_are_refused(scene, tmp_path):
    pred, ref = scene
    gdf = gpd.read_file(ref)
    gdf.to_file(ref, layer="roofs", engine="pyogrio")  # a second layer in the same GeoPackage
    with pytest.raises(InputRasterError, match=r"2 layers with geometries \(buildings, roofs\).*--layer NAME"):
        evaluate_prediction(pred, ref, tmp_path / "r", class_names=CLASSES)
    report = evaluate_prediction(pred, ref, tmp_path / "r", class_names=CLASSES, vector=VectorOptions(layer="roofs"))
    assert report.report["vector_reference"]["layer"] == "roofs"
    points = tmp_path / "points.geojson"
    gdf.assign(geometry=gdf.geometry.representative_point()).to_file(points, engine="pyogrio")
    with pytest.raises(InputRasterError, match="4 Point feature"):
        evaluate_prediction(pred, points, tmp_path / "r2", class_names=CLASSES)


# -- real data: OpenStreetMap footprints over the Tanzania crop ----------------------------------
def test_osm_geopackage_rasterises_onto_the_tanzania_mask(shared_data, tmp_path):
    gpkg = shared_data / "oam_tanzania" / "tanzania_west_buildings.gpkg"
    mask = SAMPLE_TILES / "tanzania" / "mask.tif"  # a 1024 px crop of the scene's mask, same grid
    out = tmp_path / "report"
    res = CliRunner().invoke(main, ["evaluate", str(mask), str(gpkg), "--attribute", "class_name", "--classes",
                                    "background,building", "-o", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    conf = np.array(report["confusion_matrix"])
    assert conf[0, 1] == conf[1, 0] == 0 and conf[1, 1] > 0  # pixel for pixel, as the data's README says
    assert report["OA"] == 1.0
    with rasterio.open(mask) as src:
        bounds = shapely.box(*src.bounds)
    footprints = gpd.read_file(gpkg, layer="buildings").geometry
    inside = int((footprints.intersection(bounds).area > 0).sum())
    row = report["objects"]["per_class"][0]
    # the crop holds 4 footprints, apart from each other: each is one region of the mask
    assert row["reference_objects"] == row["predicted_objects"] == row["tp"] == inside == 4
