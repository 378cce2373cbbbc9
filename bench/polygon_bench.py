"""What coverage simplification costs when polygons are traced from a class raster.

Two cases: a generated busy land-cover map (smoothed noise cut into 5 classes, every class
polygonised, 0.3 m pixels) and, when ``../shared/data`` is present, the Tanzania scene's
OpenStreetMap buildings rasterised on the scene's grid. Each repeat traces every case once with
``--simplify 0`` (pixel outlines) and once with the default (``1px``: the whole coverage simplified
together), in a freshly shuffled order; reported are the median times, their ratio, polygon and
vertex counts, and whether the simplified result is still a valid coverage.

    .venv/bin/python bench/polygon_bench.py --size 2048 --repeats 3     # -> bench/results/polygon_bench.{json,md}
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import shapely
from affine import Affine

from rsseg.inference import polygonize
from rsseg.io import atomic_path, write_json

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "oam_tanzania"
CLASSES = ["background", "building", "road", "water", "forest"]


def busy_map(path: Path, n: int, seed: int = 0) -> Path:
    """Smoothed noise (a 13 x 13 box filter) cut at its quintiles: blobs of 5 classes, every one touching others."""
    rng = np.random.default_rng(seed)
    field = rng.standard_normal((n + 12, n + 12))
    integral = np.pad(field.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    smooth = integral[13:, 13:] - integral[:-13, 13:] - integral[13:, :-13] + integral[:-13, :-13]
    classes = np.digitize(smooth, np.quantile(smooth, [0.2, 0.4, 0.6, 0.8])).astype(np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=n, height=n, count=1, dtype="uint8", nodata=255,
                       crs="EPSG:32633", transform=Affine(0.3, 0, 500000, 0, -0.3, 100000)) as dst:
        dst.write(classes, 1)
    return path


def tanzania_buildings(path: Path) -> Path | None:
    """The scene's OSM buildings rasterised on its grid (background 0, building 1), if the data is there."""
    scene, gpkg = SHARED / "tanzania_west_buildings.tif", SHARED / "tanzania_west_buildings.gpkg"
    if not (scene.is_file() and gpkg.is_file()):
        return None
    import geopandas as gpd
    from rasterio.features import rasterize

    with rasterio.open(scene) as src:
        profile = src.profile | {"count": 1, "dtype": "uint8", "nodata": 255}
        shapes = gpd.read_file(gpkg).to_crs(src.crs).geometry
        mask = rasterize(((g, 1) for g in shapes), out_shape=(src.height, src.width), transform=src.transform)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(mask.astype(np.uint8), 1)
    return path


def trace(raster: Path, classes: list[str], simplify: float | str) -> dict:
    t0 = time.perf_counter()
    gdf = polygonize(raster, classes, simplify=simplify, classes=list(range(1, len(classes))))
    seconds = time.perf_counter() - t0
    geoms = gdf.geometry.values
    return {"seconds": seconds, "polygons": len(gdf), "vertices": int(shapely.get_num_coordinates(geoms).sum()),
            "area_m2": float(gdf["area_m2"].sum()) if "area_m2" in gdf else None,
            "coverage_valid": bool(shapely.coverage_is_valid(geoms))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048, help="side of the generated map in pixels")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", default="polygon_bench")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    env = {"commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                    cwd=Path(__file__).parent).stdout.strip(),
           "argv": sys.argv[1:], "load_average_start": os.getloadavg(), "shapely": shapely.__version__}
    rows = []
    with tempfile.TemporaryDirectory(prefix="rsseg-polygons-") as tmp:
        cases = [(f"generated {args.size}x{args.size}, 5 classes", busy_map(Path(tmp) / "busy.tif", args.size), CLASSES)]
        if (buildings := tanzania_buildings(Path(tmp) / "tanzania.tif")) is not None:
            cases.append(("Tanzania OSM buildings", buildings, ["background", "building"]))
        runs = {(case, simp): [] for case, _, _ in cases for simp in ("0", "1px")}
        for _ in range(args.repeats):
            order = [(case, path, classes, simp) for case, path, classes in cases for simp in ("0", "1px")]
            random.shuffle(order)
            for case, path, classes, simp in order:
                runs[case, simp].append(trace(path, classes, 0 if simp == "0" else simp))
        for case, _, _ in cases:
            plain, simplified = runs[case, "0"], runs[case, "1px"]
            t0, t1 = (statistics.median(r["seconds"] for r in rs) for rs in (plain, simplified))
            rows.append({"case": case, "pixel_outlines_s": t0, "simplified_s": t1, "ratio": t1 / t0,
                         "polygons": simplified[0]["polygons"], "vertices_pixel_outlines": plain[0]["vertices"],
                         "vertices_simplified": simplified[0]["vertices"],
                         "coverage_valid": simplified[0]["coverage_valid"]})
    env["load_average_end"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{args.name}.json", {"env": env, "results": rows})
    lines = [f"# Coverage simplification cost (commit {env['commit']})", "",
             f"load average {env['load_average_start'][0]:.2f} -> {env['load_average_end'][0]:.2f}; "
             f"median of {args.repeats} shuffled repeats; `{' '.join(['bench/polygon_bench.py', *sys.argv[1:]])}`", "",
             "| case | polygons | --simplify 0 | --simplify 1px | ratio | vertices 0 -> 1px | valid coverage |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['polygons']:,} | {r['pixel_outlines_s']:.2f} s | {r['simplified_s']:.2f} s | "
                     f"{r['ratio']:.2f} | {r['vertices_pixel_outlines']:,} -> {r['vertices_simplified']:,} | "
                     f"{r['coverage_valid']} |")
    with atomic_path(args.out / f"{args.name}.md") as tmp_md:
        tmp_md.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
