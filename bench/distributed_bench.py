"""Distributed predict throughput: single-process ``predict_file`` vs Dask strips on 1 and 2 workers.

The same generated RGB raster, checkpoint (random UNetFormer weights; speed does not depend on
them) and tile/overlap for all three runs; each run writes the class COG and the area report.
Reports wall time, strips/s and MPix/s, and each run's ratio to the single-process one. Strips
hold ``--window-rows`` rows of windows each, so the strip plan (and the halo windows each strip
recomputes) is the same for 1 and 2 workers. One run each: on a busy machine the ratios are rough.

    python bench/distributed_bench.py --size 1536 --tile 256 --encoder mobilenetv3_small_050 --out bench/results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from rsseg.checkpoint import ModelMeta, save_model
from rsseg.config import Config
from rsseg.inference import Predictor, predict_file
from rsseg.inference.settings import PredictSettings
from rsseg.inference.windows import WindowPlan, plan_windows
from rsseg.io import atomic_path
from rsseg.models import build_model


def make_raster(path: Path, size: int) -> Path:
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.stack([(xx * 3) % 256, (yy * 5) % 256, ((xx + yy) * 7) % 256]).astype(np.uint8)
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32633",
                   transform=Affine(1.0, 0, 500000, 0, -1.0, 100000), tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(img)
    return path


def make_checkpoint(path: Path, encoder: str) -> Path:
    cfg = Config()
    cfg.model.encoder = encoder
    model = build_model(cfg.model, num_classes=6, in_channels=3)
    meta = ModelMeta(classes=[f"c{i}" for i in range(6)], colors=["#000000"] * 6, bands=["r", "g", "b"],
                     mean=[0.5] * 3, std=[0.25] * 3, config=cfg.to_dict(),
                     input_dtype="uint8", input_range=[[0.0, 255.0] for _ in range(3)])  # the 8-bit scenes written here
    return save_model(path, model, meta)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1536, help="raster side in pixels")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--window-rows", type=int, default=1, help="rows of windows per strip")
    ap.add_argument("--encoder", default="mobilenetv3_small_050")
    ap.add_argument("--workers", default="1,2", help="worker counts of the LocalCluster runs")
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    args = ap.parse_args()

    from rsseg.inference.distributed import RemoteModel, dask_client, predict_file_dask, worker_predictor

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        raster = make_raster(tmp / "in.tif", args.size)
        ckpt = make_checkpoint(tmp / "m.ckpt", args.encoder)
        settings = PredictSettings(tile=args.tile, overlap=args.overlap, device="cpu")
        predictor = Predictor.from_checkpoint(ckpt, settings)
        model = RemoteModel.plan(ckpt, settings)
        mpix = args.size * args.size / 1e6
        strips = len(WindowPlan(args.size, args.size, args.tile, args.overlap).row_strips(args.window_rows))
        rows = []

        start = time.perf_counter()
        predict_file(predictor, raster, tmp / "single.tif", report_path=tmp / "single.json")
        single_s = time.perf_counter() - start
        rows.append({"run": "single-process", "workers": 0, "seconds": single_s})
        reference = rasterio.open(tmp / "single.tif").read(1)

        for n in (int(w) for w in args.workers.split(",")):
            with dask_client(f"local:{n}") as client:
                client.wait_for_workers(n)
                # load the model on every worker first: the timed run measures throughput
                client.run(worker_predictor, model.checkpoint, model.settings)
                start = time.perf_counter()
                out = tmp / f"dask{n}.tif"
                predict_file_dask(client, model, raster, out, report_path=tmp / f"dask{n}.json",
                                  window_rows=args.window_rows)
                seconds = time.perf_counter() - start
            diff = rasterio.open(out).read(1) != reference
            gap = None
            if diff.any():  # differences are allowed at near-ties only: report the largest top-two gap among them
                probs = predictor.predict_array(rasterio.open(raster).read(), return_probs=True)
                top2 = np.sort(probs, axis=0)[-2:]
                gap = float((top2[1] - top2[0])[diff].max())
            rows.append({"run": f"dask LocalCluster x{n}", "workers": n, "seconds": seconds,
                         "pixels_differ": int(diff.sum()), "max_top2_gap_where_differ": gap})

    for r in rows:
        r["mpix_per_s"] = mpix / r["seconds"]
        r["strips_per_s"] = strips / r["seconds"] if r["workers"] else None
        r["ratio_vs_single"] = single_s / r["seconds"]
    result = {
        "raster": f"{args.size}x{args.size} RGB uint8 (generated)", "tile": args.tile, "overlap": args.overlap,
        "windows": len(plan_windows(args.size, args.size, args.tile, args.overlap)), "strips": strips,
        "window_rows_per_strip": args.window_rows, "encoder": args.encoder, "cpu_count": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0], "python": platform.python_version(), "runs": rows,
        "note": "one run each; the Dask runs include the client's COG/report writing; the cluster start and "
                "the model load on each worker (once per worker process) are not timed",
    }
    with atomic_path(args.out / "distributed.json") as p:
        p.write_text(json.dumps(result, indent=2))
    lines = [f"# Distributed predict: {result['raster']}, tile {args.tile}/{args.overlap}, {result['windows']} windows, "
             f"{strips} strips of {args.window_rows} window row(s), {args.encoder}",
             "", f"CPU cores: {os.cpu_count()} (1-minute load average at the end: {result['load_avg_1m']:.1f})", "",
             "| run | seconds | MPix/s | strips/s | x single | pixels differing (max top-2 gap there) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        sps = f"{r['strips_per_s']:.2f}" if r["strips_per_s"] is not None else "-"
        gap = f" ({r['max_top2_gap_where_differ']:.1e})" if r.get("max_top2_gap_where_differ") is not None else ""
        lines.append(f"| {r['run']} | {r['seconds']:.2f} | {r['mpix_per_s']:.3f} | {sps} | {r['ratio_vs_single']:.2f} "
                     f"| {r.get('pixels_differ', '-')}{gap} |")
    lines += ["", result["note"] + "."]
    if result["load_avg_1m"] > (os.cpu_count() or 1):
        lines += ["", "The machine was oversubscribed (load average above the core count): the worker processes "
                  "competed with other jobs for the same cores, so these ratios are not scaling figures."]
    lines += ["", "Repeat: `python bench/distributed_bench.py "
              f"--size {args.size} --tile {args.tile} --overlap {args.overlap} --window-rows {args.window_rows} "
              f"--encoder {args.encoder}`"]
    with atomic_path(args.out / "distributed.md") as p:
        p.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
