"""Polygons as an analyst reads them: a minimum area in square metres (or pixels) that scales with
the pixel size, and outlines simplified as one coverage, so neighbouring polygons keep their
shared edges, across the windows polygonize reads too."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from click.testing import CliRunner
from conftest import write_raster
from test_outputs import CLASSES, class_map, meta, painted_image, predictor

from rsseg.cli.main import main
from rsseg.errors import ConfigError
from rsseg.inference import polygonize
from rsseg.inference.vectorize import (
    MIN_AREA_M2,
    MIN_PIXELS,
    SIMPLIFY_PX,
    Measure,
    _match_shared_vertices,
    min_area_pixels,
    parse_area,
    parse_length,
    simplify_coverage,
)


def _class_raster(tmp_path, cls: np.ndarray, pixel: float, name: str = "cls.tif"):
    return write_raster(tmp_path / name, cls[None].astype(np.uint8), crs="EPSG:32633",
                        transform=Affine(pixel, 0, 500000, 0, -pixel, 100000), nodata=255)


# ------------------------------------------------------------------ the minimum area
def test_areas_and_lengths_parse_with_their_units():
    assert parse_area("2m2") == parse_area("2 m²") == parse_area(" 2M2 ") == parse_area(2) == Measure(2.0, "m2")
    assert parse_area("8px") == Measure(8.0, "px") and parse_area("0") == Measure(0.0, "m2")
    assert parse_length("0.5m") == parse_length("0.5") == Measure(0.5, "m") and parse_length("1px") == Measure(1, "px")
    assert str(parse_area("1.5m2")) == "1.5m2" and parse_area(Measure(3.0, "px")) == Measure(3.0, "px")
    for bad, says in [("4pixels", "--min-area '4pixels' is not a number with a unit (m2, m², px); use e.g. "
                                  "--min-area 2m2 (square metres) or --min-area 8px (pixels)"),
                      ("nan", "--min-area nan is not a finite number"), ("-1m2", "--min-area must be at least 0"),
                      ("m2", "is not a number with a unit"), ("2ha", "is not a number with a unit")]:
        with pytest.raises(ConfigError) as err:
            parse_area(bad, "--min-area")
        assert says in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"--simplify '2m2' is not a number with a unit \(m, px\)"):
        parse_length("2m2", "--simplify")  # an area where a length is wanted


def test_default_minimum_is_square_metres_with_a_pixel_floor():
    assert min_area_pixels(None, 0.1**2) == pytest.approx(MIN_AREA_M2 / 0.01)  # 10 cm: 200 pixels
    assert min_area_pixels(None, 10.0**2) == MIN_PIXELS  # 10 m: 2 m2 is under a pixel, the floor stays
    assert min_area_pixels("1m2", 10.0**2) == pytest.approx(0.01)  # a value given is taken as it is
    assert min_area_pixels("8px", 0.1**2) == 8 and min_area_pixels(0, 1.0) == 0


def test_minimum_area_scales_with_the_pixel_size(tmp_path):
    cls = np.zeros((60, 60), np.uint8)
    cls[5:15, 5:15] = 1  # 100 px
    cls[30:50, 30:50] = 1  # 400 px
    cls[2, 40] = 1  # 1 px
    fine = _class_raster(tmp_path, cls, 0.1, "fine.tif")  # 1 m2, 4 m2, 0.01 m2
    gdf = polygonize(fine, ["bg", "building"], classes=[1])
    assert gdf.area_m2.tolist() == pytest.approx([4.0], rel=1e-3)
    assert gdf.attrs["polygons"]["min_area_m2"] == pytest.approx(MIN_AREA_M2, rel=1e-3)
    assert gdf.attrs["polygons"]["min_area_px"] == pytest.approx(MIN_AREA_M2 / 0.01, rel=1e-3)
    assert sorted(polygonize(fine, ["bg", "building"], classes=[1], min_area="50px").area_m2) \
        == pytest.approx([1, 4], rel=1e-3)
    assert len(polygonize(fine, ["bg", "building"], classes=[1], min_area=0)) == 3
    coarse = _class_raster(tmp_path, cls, 10.0, "coarse.tif")  # 2 m2 is a fiftieth of a pixel
    gdf = polygonize(coarse, ["bg", "building"], classes=[1])
    assert len(gdf) == 2 and gdf.attrs["polygons"]["min_area_px"] == MIN_PIXELS  # the speck goes all the same
    assert gdf.attrs["polygons"]["min_area_m2"] == pytest.approx(MIN_PIXELS * 100, rel=1e-3)


def test_tanzania_buildings_under_the_default_minimum_are_gone(shared_data, tmp_path):
    """The OpenStreetMap buildings of the 7.5 cm Tanzania scene rasterised on a crop at its east
    edge, where the scene cuts two buildings into slivers under 1 m2."""
    import geopandas as gpd
    from rasterio.features import rasterize
    from rasterio.windows import Window

    scene = shared_data / "oam_tanzania"
    with rasterio.open(scene / "tanzania_west_buildings.tif") as src:
        window = Window(3584, 1000, 512, 1024)
        transform, crs = src.window_transform(window), src.crs
    osm = gpd.read_file(scene / "tanzania_west_buildings.gpkg", layer="buildings").to_crs(crs)
    cls = rasterize(((g, 1) for g in osm.geometry), out_shape=(1024, 512), transform=transform, dtype="uint8")
    path = write_raster(tmp_path / "buildings.tif", cls, crs=crs, transform=transform, nodata=255)
    every = polygonize(path, ["background", "building"], classes=[1], min_area=0, simplify=0)
    kept = polygonize(path, ["background", "building"], classes=[1])  # the defaults
    small = every.area_m2.to_numpy() < MIN_AREA_M2
    assert (every.area_m2 < 1).sum() == small.sum() == 2
    assert len(kept) == len(every) - 2 and kept.area_m2.min() >= MIN_AREA_M2
    assert sorted(kept.area_m2) == pytest.approx(sorted(every.area_m2[~small]), rel=1e-3)  # simplified alike


# ------------------------------------------------------------------ coverage simplification
def _staircase(size: int = 96) -> np.ndarray:
    """Class 1 above a diagonal staircase, class 2 below it, a class-3 block on both: three
    polygons sharing pixel-staircase edges."""
    rows, cols = np.mgrid[0:size, 0:size]
    cls = np.where(cols > rows + (rows // 7) % 3, 1, 2).astype(np.uint8)
    cls[60:80, 40:90] = 3
    return cls


@pytest.mark.parametrize("window_size", [2048, 32])  # 32: every polygon is cut by windows and dissolved
def test_neighbours_keep_their_shared_edges_after_simplification(tmp_path, window_size):
    path = _class_raster(tmp_path, _staircase(), 0.5)
    raw = polygonize(path, ["bg", "a", "b", "c"], simplify=0, min_area=0, window_size=window_size)
    simple = polygonize(path, ["bg", "a", "b", "c"], min_area=0, window_size=window_size)  # default tolerance
    assert sorted(simple.class_id) == sorted(raw.class_id) == [1, 2, 3]
    geoms = simple.geometry.values
    assert shapely.coverage_is_valid(geoms) and shapely.is_valid(geoms).all()
    # no gap, no overlap: the pieces still tile exactly what the pixels covered
    assert shapely.union_all(geoms).area == pytest.approx(shapely.area(geoms).sum(), rel=1e-9)
    assert shapely.union_all(geoms).area == pytest.approx(96 * 96 * 0.25, rel=1e-9)
    a, b, c = (geoms[simple.class_id.to_numpy() == k][0] for k in (1, 2, 3))
    for one, other in ((a, b), (a, c), (b, c)):
        assert shapely.intersection(one.boundary, other.boundary).length > 10  # still shared, metres
    vertices = shapely.get_num_coordinates(geoms).sum()
    assert vertices < shapely.get_num_coordinates(raw.geometry.values).sum() / 3  # the staircase is gone
    assert simple.attrs["polygons"]["simplify_px"] == SIMPLIFY_PX
    assert simple.attrs["polygons"]["simplify_m"] == pytest.approx(SIMPLIFY_PX * 0.5, rel=1e-3)
    # metres become pixels with the (geodesic) pixel size at the raster's centre
    metres = polygonize(path, ["bg", "a", "b", "c"], min_area=0, window_size=window_size, simplify="1m")
    assert metres.attrs["polygons"]["simplify_px"] == pytest.approx(2, rel=1e-3)
    assert shapely.get_num_coordinates(metres.geometry.values).sum() < vertices


def test_simplification_keeps_a_rectangle_and_the_traced_area(tmp_path):
    cls = np.zeros((40, 50), np.uint8)
    cls[10:30, 5:45] = 1
    gdf = polygonize(_class_raster(tmp_path, cls, 2.0), ["bg", "rect"], classes=[1], window_size=16)
    assert shapely.get_num_coordinates(gdf.geometry.values).tolist() == [5]  # 4 corners, closed
    assert gdf.area_m2.tolist() == pytest.approx([20 * 40 * 4], rel=2e-3)


def test_simplify_coverage_needs_no_matching_vertices_on_input():
    # a long edge shared with two neighbours has no vertex where they meet: the helper adds it
    big = shapely.box(0, 0, 10, 4)
    left, right = shapely.box(0, 4, 4, 8), shapely.box(4, 4, 10, 8)
    coverage = np.array([big, left, right], dtype=object)
    assert not shapely.coverage_is_valid(coverage)  # as traced: the long edge lacks the vertex (4, 4)
    matched = _match_shared_vertices(coverage)
    assert shapely.coverage_is_valid(matched) and shapely.equals(matched, coverage).all()
    assert shapely.get_num_coordinates(matched).tolist() == [6, 5, 5]
    out = simplify_coverage(coverage, 1.0)
    assert shapely.coverage_is_valid(out)
    assert shapely.union_all(out).area == pytest.approx(shapely.area(out).sum())
    assert simplify_coverage(np.array([big], dtype=object), 0)[0] is big  # 0: untouched


# ------------------------------------------------------------------ the command line and the report
def test_predict_report_records_the_effective_minimum(tmp_path):
    src = painted_image(tmp_path / "in.tif", class_map())  # 2 m pixels: 2 m2 is half a pixel, the floor holds
    out = predict_file_report(tmp_path, src, predictor())
    assert out["polygons"] == {"count": 2, "min_area_m2": pytest.approx(MIN_PIXELS * 4, rel=1e-3), "regularized": [],
                               "min_area_px": MIN_PIXELS, "simplify_m": pytest.approx(SIMPLIFY_PX * 2, rel=1e-3),
                               "simplify_px": SIMPLIFY_PX}
    out = predict_file_report(tmp_path, src, predictor(), min_area="12m2", simplify=0)
    assert out["polygons"]["min_area_px"] == pytest.approx(3, rel=1e-3) and out["polygons"]["simplify_px"] == 0
    assert out["polygons"]["count"] == 3  # the 3-pixel speck (12 m2) is kept, the 1-pixel one is not


def predict_file_report(tmp_path, src, model, **options) -> dict:
    from rsseg.inference import predict_file

    predict_file(model, src, tmp_path / "cls.tif", vector_path=tmp_path / "v.gpkg", report_path=tmp_path / "r.json",
                 overwrite=True, **options)
    return json.loads((tmp_path / "r.json").read_text())


def test_cli_takes_units_and_names_a_bad_one(tmp_path):
    from rsseg.checkpoint import save_model
    from rsseg.config import ModelConfig
    from rsseg.models import build_model

    ckpt = save_model(tmp_path / "m.ckpt", build_model(ModelConfig(), num_classes=len(CLASSES), in_channels=3).eval(),
                      meta(gsd=2.0))
    src = painted_image(tmp_path / "in.tif", class_map())
    base = ["predict", str(src), "-m", str(ckpt), "-o", str(tmp_path / "c.tif"), "--vector", str(tmp_path / "v.gpkg"),
            "--report", str(tmp_path / "r.json"), "--tile", "64", "--overlap", "16", "--overwrite"]
    res = CliRunner().invoke(main, [*base, "--min-area", "8px", "--simplify", "0.5px"])
    assert res.exit_code == 0, res.output
    polygons = json.loads((tmp_path / "r.json").read_text())["polygons"]
    assert polygons["min_area_px"] == 8 and polygons["min_area_m2"] == pytest.approx(32, rel=1e-3)
    assert polygons["simplify_px"] == 0.5 and polygons["simplify_m"] == pytest.approx(1, rel=1e-3)
    res = CliRunner().invoke(main, [*base, "--min-area", "8 pixels"])
    assert res.exit_code == 2
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--min-area '8 pixels' is not a number with a unit" in errors[0], res.output
    help_text = " ".join(CliRunner().invoke(main, ["predict", "--help"]).output.split())
    for default in (f"{MIN_AREA_M2:g}m2", f"{MIN_PIXELS} pixels", f"{SIMPLIFY_PX:g}px"):  # the help says the defaults
        assert default in help_text


# ------------------------------------------------------------------ building regularisation (optional extra)
def _corner_angles(polygon: shapely.Polygon) -> np.ndarray:
    c = np.asarray(polygon.exterior.coords)[:-1]
    before, after = np.roll(c, 1, 0) - c, np.roll(c, -1, 0) - c
    cos = (before * after).sum(1) / np.linalg.norm(before, axis=1) / np.linalg.norm(after, axis=1)
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def test_regularized_buildings_have_right_angles(sample_tiles):
    pytest.importorskip("buildingregulariser")
    mask = sample_tiles / "tanzania" / "mask.tif"  # OpenStreetMap buildings, 7.5 cm
    plain = polygonize(mask, ["background", "building"], classes=[1])
    square = polygonize(mask, ["background", "building"], classes=[1], regularize=[1])
    assert len(square) == len(plain) == 4 and square.attrs["polygons"]["regularized"] == ["building"]
    for polygon in square.geometry.values:  # every corner a multiple of 45 degrees
        angles = _corner_angles(polygon)
        assert np.abs(angles - 45 * np.round(angles / 45)).max() < 1, angles
    assert (shapely.get_num_coordinates(square.geometry.values)
            < shapely.get_num_coordinates(plain.geometry.values)).all()
    assert square.area_m2.to_numpy() == pytest.approx(plain.area_m2.to_numpy(), rel=0.02)
    assert square.crs == plain.crs


def test_regularize_only_the_named_classes_and_report_it(tmp_path):
    pytest.importorskip("buildingregulariser")
    from rsseg.inference import predict_file

    src = painted_image(tmp_path / "in.tif", class_map())
    out = predict_file_report(tmp_path, src, predictor(), regularize="building")
    assert out["polygons"]["regularized"] == ["building"] and out["polygons"]["count"] == 2
    with pytest.raises(ConfigError, match="--regularize road: not among the polygonised classes"):
        predict_file(predictor(), src, tmp_path / "c2.tif", vector_path=tmp_path / "v2.gpkg",
                     vector_classes="building", regularize="road")
    assert not (tmp_path / "c2.tif").exists() and not (tmp_path / "v2.gpkg").exists()


def test_regularize_without_the_library_is_one_line(tmp_path, monkeypatch):
    import sys

    from rsseg.errors import BackendUnavailableError

    monkeypatch.setitem(sys.modules, "buildingregulariser", None)  # as if not installed
    path = _class_raster(tmp_path, _staircase(), 0.5)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'rsseg\[regularize\]'"):
        polygonize(path, ["bg", "a", "b", "c"], regularize=[3])
    src = painted_image(tmp_path / "in.tif", class_map())
    res = CliRunner().invoke(main, ["predict", str(src), "-m", str(tmp_path / "absent.ckpt"), "-o",
                                    str(tmp_path / "c.tif"), "--vector", str(tmp_path / "v.gpkg"),
                                    "--regularize", "building"])
    assert res.exit_code == 2 and "needs the buildingregulariser package" in res.output, res.output
    res = CliRunner().invoke(main, ["predict", str(src), "-m", str(tmp_path / "absent.ckpt"), "-o",
                                    str(tmp_path / "c.tif"), "--regularize", "building"])
    assert res.exit_code == 2 and "--regularize shapes polygons, and none are written; add --vector" in res.output


def test_a_raster_in_degrees_is_regularized_on_the_ground(tmp_path):
    pytest.importorskip("buildingregulariser")
    import geopandas as gpd
    from rasterio.features import rasterize

    # a 20 m x 12 m building turned 25 degrees, at 60 N, on a grid of about 0.2 m pixels in degrees
    utm = "EPSG:32633"
    house = shapely.affinity.rotate(shapely.box(500000, 6650000, 500020, 6650012), 25)
    lonlat = gpd.GeoSeries([house], crs=utm).to_crs(4326).iloc[0]
    transform = Affine(3.6e-6, 0, lonlat.bounds[0] - 1e-4, 0, -1.8e-6, lonlat.bounds[3] + 5e-5)
    cls = rasterize([(lonlat, 1)], out_shape=(160, 200), transform=transform, dtype="uint8")
    path = write_raster(tmp_path / "deg.tif", cls, crs="EPSG:4326", transform=transform, nodata=255)
    square = polygonize(path, ["bg", "building"], classes=[1], regularize=[1])
    assert square.crs.to_epsg() == 4326 and len(square) == 1
    on_ground = square.to_crs(utm).geometry.iloc[0]
    angles = _corner_angles(on_ground)
    assert np.abs(angles - 45 * np.round(angles / 45)).max() < 1, angles  # in metres, not in degrees
    assert on_ground.area == pytest.approx(house.area, rel=0.05)


def test_a_polygon_with_a_hole_and_its_island_stay_a_coverage(tmp_path):
    cls = np.ones((40, 40), np.uint8)
    rows, cols = np.mgrid[0:40, 0:40]
    cls[(rows - 20) ** 2 + (cols - 18) ** 2 < 90] = 2  # a round island: a staircase hole in class 1
    cls[18:22, 16:24] = 3  # and a block inside the island
    gdf = polygonize(_class_raster(tmp_path, cls, 1.0), ["bg", "field", "pond", "hut"], window_size=16)
    geoms = gdf.geometry.values
    assert sorted(gdf.class_id) == [1, 2, 3] and shapely.coverage_is_valid(geoms)
    assert shapely.union_all(geoms).area == pytest.approx(1600) and shapely.area(geoms).sum() == pytest.approx(1600)
    assert len(gdf.geometry[gdf.class_id == 1].iloc[0].interiors) == 1
