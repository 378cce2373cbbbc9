"""Benchmark of ``rsseg predict``'s streaming pipeline: throughput ratio and peak memory.

Each case (the real Tanzania raster, generated rasters of several widths/heights) runs in a fresh
subprocess that alternates, ``--reps`` times, the full ``predict_file`` pipeline (read,
normalise, forward, softmax, blend, argmax, write, COG) with the bare model forward (``model(x)``
-> logits only, on real tiles of that raster, batched like the pipeline) over all of the plan's
windows. Interleaving makes both see the same machine load (2 shared cores here). Reported:

- ``ratio`` = pipeline MPix/s / bare-forward MPix/s, median over repetitions with min/max
  (target >= 0.9 on CPU: reading, blending and writing hidden behind compute). With
  ``--bare-batches N`` each bare measurement times N batches and scales to all windows.
- ``peak_rss_mb``: the child's peak resident set (``VmHWM``) right after the first pipeline
  run, before any bare timing (target: flat in height, < 2 GB at 32k x 32k on CPU).
  ``rss_after_warmup_mb`` is the floor (torch, model, one forward) before the pipeline starts.

Models: ``unetformer`` (``rsseg.models.build_model``, random weights: speed does not depend on
them) or ``tiny`` (one 1x1 conv: makes the memory study over a Gpix feasible on 2 cores, but
leaves almost no compute to hide I/O behind, so its ratio is low by construction). Defaults:
UNetFormer (2 classes) on Tanzania for the ratio, tiny (7 classes) on the generated sizes.

    python bench/predict_bench.py --out bench/results
    python bench/predict_bench.py --no-tanzania --sizes 32768x1024,32768x4096,32768x8192 --reps 1

``--engines torch,onnx`` compares the inference engines instead (``bench/results/predict_engines``):
one UNetFormer checkpoint (random weights, ``--classes``), exported to ONNX once before any timing
(``export_s``), then per case one fresh process per engine and repetition, alternating engines:
``Predictor.from_checkpoint(engine=...)`` + ``predict_file`` (pipeline MPix/s), the bare engine
(``forward_probs`` on the plan's first batch, scaled to all windows), their ratio, the peak RSS of
the process (model loading included) and whether torch was imported. ``onnx_vs_torch`` is the ONNX
pipeline's time over the torch pipeline's (< 1: ONNX faster).

    python bench/predict_bench.py --engines torch,onnx --sizes 4096x2048,32768x1024 --reps 1

``openvino`` is the OpenVINO engine on the same export. ``onnx-noarena`` is the ONNX engine without ONNX
Runtime's memory arena (``OnnxEngine.arena``). A ``-file`` suffix (``onnx-file``, ``openvino-file``)
predicts from the exported ``.onnx`` model file itself (``rsseg export``, ``-m model.onnx``) instead of
the checkpoint with its cached export: the same graph, loaded without reading the checkpoint.

    python bench/predict_bench.py --engines onnx,openvino,openvino-file --sizes 4096x2048 --no-tanzania --batch 1 --reps 2

``--buffer-mb 1024,400,320`` runs every engine once per width budget (``predict_file(buffer_mb=...)``:
below the full-width need, column strips), so memory and the strips' extra windows are compared
in the same run (``bench/results/predict_strips``):

    python bench/predict_bench.py --engines onnx-noarena,onnx --buffer-mb 1024,400,320 --sizes 32768x2048 \
        --no-tanzania --batch 1 --classes 7 --reps 1 --bare-batches 3 --tag predict_strips
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TANZANIA = Path(__file__).resolve().parents[2] / "shared" / "data" / "oam_tanzania" / "tanzania_west_rgb.tif"
DEFAULT_SIZES = "4096x4096,16384x4096,32768x1024,32768x2048,32768x4096"
NUM_CLASSES = 7


def parse_size(text: str) -> tuple[int, int]:
    text = text.lower().replace("k", "*1024")
    w, _, h = text.partition("x")
    return int(eval(w, {})), int(eval(h or w, {}))  # noqa: S307 - digits and '*1024' only


def generate(path: Path, width: int, height: int) -> Path:
    """Write a 3-band uint8 tiled GeoTIFF (uncompressed, so generation is I/O-cheap) strip by strip."""
    import rasterio
    from affine import Affine

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:512, 0:512]
    block = np.stack([(np.sin(xx / (9 + 4 * i)) * np.cos(yy / (13 + 3 * i)) + 1) * 110 for i in range(3)])
    block = np.clip(block + rng.normal(0, 12, block.shape), 0, 255).astype(np.uint8)
    profile = dict(driver="GTiff", width=width, height=height, count=3, dtype="uint8", tiled=True, blockxsize=512,
                   blockysize=512, crs="EPSG:32633", transform=Affine(0.5, 0, 400000, 0, -0.5, 5000000),
                   bigtiff="yes")
    reps = -(-width // 512)
    with rasterio.open(path, "w", **profile) as dst:
        for i, y0 in enumerate(range(0, height, 512)):
            n = min(512, height - y0)
            strip = np.roll(np.tile(block, (1, 1, reps)), 97 * i, axis=2)[:, :n, :width]
            dst.write(strip, window=rasterio.windows.Window(0, y0, width, n))
    return path


def build(model_name: str, num_classes: int):
    import torch
    from torch import nn

    from rsseg.checkpoint import ModelMeta

    k = num_classes
    meta = ModelMeta(classes=[f"class{i}" for i in range(k)], colors=["#%06x" % (i * 0x202020) for i in range(k)],
                     bands=["red", "green", "blue"], mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225],
                     input_dtype="uint8", input_range=[[0.0, 255.0] for _ in range(3)])  # the 8-bit scenes written here
    torch.manual_seed(0)
    if model_name == "tiny":
        return nn.Conv2d(3, k, 1), meta
    from rsseg.config import ModelConfig
    from rsseg.models import build_model

    return build_model(ModelConfig(pretrained=False), num_classes=k, in_channels=3), meta


class TimedModel:
    """Callable wrapper that sums the wall time of the model's forward calls (``seconds``).

    Inside the pipeline this is the time the main thread spends in ``model(x)``; divided by the
    pipeline's wall time it is the share of the run that is model compute, a second view of the
    same target that does not depend on a separate bare-forward timing.
    """

    def __init__(self, model) -> None:
        self.model, self.seconds = model, 0.0

    def __getattr__(self, name: str):
        return getattr(self.model, name)

    def to(self, device):
        self.model = self.model.to(device)
        return self

    def eval(self):
        self.model.eval()
        return self

    def __call__(self, x):
        t0 = time.perf_counter()
        out = self.model(x)
        self.seconds += time.perf_counter() - t0
        return out


def peak_rss_mb() -> float:
    """This process's peak resident set, MiB: ``VmHWM`` of its own address space. Not
    ``getrusage``'s ``ru_maxrss``, which a child started by ``subprocess`` inherits from the
    parent (Linux keeps the larger of the pre-exec and post-exec peaks), so it would read the
    parent's torch-sized peak."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def child(spec: dict) -> dict:
    """Run one case in this (fresh) process: pipeline and bare forward, interleaved ``reps`` times."""
    import rasterio
    import torch

    from rsseg.inference import Predictor, plan_windows, predict_file
    from rsseg.inference.windows import padded_size, reflect_pad

    model, meta = build(spec["model"], spec["classes"])
    timed_model = TimedModel(model)
    pred = Predictor.from_model(timed_model, meta, tile=spec["tile"], overlap=spec["overlap"], batch=spec["batch"],
                                tta="none", device=spec["device"])
    with rasterio.open(spec["input"]) as src:
        width, height = src.width, src.height
        windows = plan_windows(width, height, pred.settings.tile, pred.settings.overlap)
        # the bare forward runs on real tiles of this raster: the first batch of the plan
        tiles = [pred.normalise(src.read([1, 2, 3], window=w)) for w in windows[:pred.settings.batch]]
    ph, pw = padded_size(tiles[0].shape[1]), padded_size(tiles[0].shape[2])
    x = torch.from_numpy(np.stack([reflect_pad(t, ph, pw) for t in tiles]))
    n_batches = len(windows) / x.shape[0]
    timed = max(1, min(spec["bare_batches"] or int(np.ceil(n_batches)), int(np.ceil(n_batches))))

    def bare() -> float:
        """Seconds for the model alone (logits, no softmax/copies) on all windows' batches."""
        with torch.inference_mode():
            t0 = time.perf_counter()
            for _ in range(timed):
                model(x)
            return (time.perf_counter() - t0) / timed * n_batches

    with torch.inference_mode():
        model(x)  # warm-up (allocator, oneDNN kernels) before either timing
    rss_warm = peak_rss_mb()
    out = Path(spec["workdir"]) / "pred.tif"
    pipe_s, bare_s, inside_s, rss_pipe = [], [], [], None
    for _ in range(spec["reps"]):
        timed_model.seconds = 0.0
        t0 = time.perf_counter()
        predict_file(pred, spec["input"], out, overwrite=True)
        pipe_s.append(time.perf_counter() - t0)
        inside_s.append(timed_model.seconds)
        if rss_pipe is None:  # high-water mark of the pipeline alone, before any bare timing
            rss_pipe = peak_rss_mb()
        bare_s.append(bare())
    ratios = [b / p for b, p in zip(bare_s, pipe_s)]
    mpix = width * height / 1e6
    return {"case": spec["case"], "width": width, "height": height, "model": spec["model"], "classes": spec["classes"],
            "device": pred.settings.device, "tile": pred.settings.tile, "overlap": pred.settings.overlap, "batch": pred.settings.batch,
            "windows": len(windows), "reps": spec["reps"], "bare_batches_timed": timed,
            "pipeline_s": pipe_s, "bare_forward_s": bare_s,
            "pipeline_mpix_s": mpix / statistics.median(pipe_s), "bare_mpix_s": mpix / statistics.median(bare_s),
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "model_s_in_pipeline": inside_s,
            "forward_share": statistics.median(i / p for i, p in zip(inside_s, pipe_s)),
            "rss_after_warmup_mb": rss_warm, "peak_rss_mb": rss_pipe,
            "accumulator_mb": spec["classes"] * windows[0].height * width * 2 / 2**20}


def run_case(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode:
        return {"case": spec["case"], "model": spec["model"], "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown(rows: list[dict], header: str) -> str:
    cols = ["case", "model", "classes", "batch", "windows", "reps", "pipeline_mpix_s", "bare_mpix_s", "ratio",
            "ratio_min", "ratio_max", "forward_share", "rss_after_warmup_mb", "peak_rss_mb", "accumulator_mb"]
    lines = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | error: {r['error']} |")
            continue
        lines.append("| " + " | ".join(f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def rss_mb() -> float:
    """Current resident set of this process (Linux), MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child_engine(spec: dict) -> dict:
    """One engine on one raster in this fresh process: load, warm up, pipeline, then the bare engine."""
    import rasterio

    from rsseg.inference import Predictor, plan_windows, predict_file
    from rsseg.inference.memory import stream_columns, strip_span
    from rsseg.inference.pipeline import BUFFER_MB
    from rsseg.inference.windows import padded_size, reflect_pad

    rss_start = rss_mb()
    if not spec["arena"]:
        from rsseg.inference.engines import OnnxEngine

        OnnxEngine.arena = False
    t0 = time.perf_counter()
    pred = Predictor.from_checkpoint(spec["checkpoint"], device="cpu", engine=spec["engine"], tile=spec["tile"],
                                     overlap=spec["overlap"], batch=spec["batch"], tta="none")
    load_s = time.perf_counter() - t0
    rss_loaded = rss_mb()
    with rasterio.open(spec["input"]) as src:
        width, height = src.width, src.height
        windows = plan_windows(width, height, pred.settings.tile, pred.settings.overlap)
        tiles = [pred.normalise(src.read([1, 2, 3], window=w)) for w in windows[:pred.settings.batch]]
        strips = stream_columns(src, pred.settings.tile, pred.num_classes, spec["buffer_mb"] or BUFFER_MB)
    ring_width = strip_span(strips, pred.settings.tile, width)
    ph, pw = padded_size(tiles[0].shape[1]), padded_size(tiles[0].shape[2])
    x = np.stack([reflect_pad(t, ph, pw) for t in tiles])
    n_batches = len(windows) / x.shape[0]
    timed = max(1, min(spec["bare_batches"] or int(np.ceil(n_batches)), int(np.ceil(n_batches))))
    pred.forward_probs(x)  # warm-up: allocator, kernels, ONNX Runtime's shape-specialised plans
    out = Path(spec["workdir"]) / f"pred_{spec['engine']}.tif"
    t0 = time.perf_counter()
    budget = {} if spec["buffer_mb"] is None else {"buffer_mb": spec["buffer_mb"]}
    ran = []
    predict_file(pred, spec["input"], out, overwrite=True, on_progress=lambda done, total: ran.append(total), **budget)
    pipe_s = time.perf_counter() - t0
    peak = peak_rss_mb()  # the high-water mark of loading + pipeline, before the bare timing
    t0 = time.perf_counter()
    for _ in range(timed):
        pred.forward_probs(x)
    bare_s = (time.perf_counter() - t0) / timed * n_batches
    mpix = width * height / 1e6
    return {"case": spec["case"], "engine": spec["variant"], "width": width, "height": height,
            "classes": pred.num_classes, "tile": pred.settings.tile, "overlap": pred.settings.overlap, "batch": pred.settings.batch,
            "windows": len(windows), "windows_run": ran[-1], "strips": len(strips), "threads": _threads(pred), "load_s": load_s, "pipeline_s": pipe_s,
            "bare_s": bare_s, "bare_batches_timed": timed, "pipeline_mpix_s": mpix / pipe_s, "bare_mpix_s": mpix / bare_s,
            "pipeline_vs_bare": bare_s / pipe_s, "rss_start_mb": rss_start, "rss_loaded_mb": rss_loaded,
            "peak_rss_mb": peak, "accumulator_mb": pred.num_classes * windows[0].height * ring_width * 2 / 2**20,
            "torch_imported": "torch" in sys.modules}


def _threads(pred) -> int:
    engine = pred.engine
    if engine.name == "onnx":
        return engine.session.get_session_options().intra_op_num_threads
    if engine.name == "openvino":
        return int(engine.compiled.get_property("INFERENCE_NUM_THREADS"))
    import torch

    return torch.get_num_threads()


def run_engines(args: argparse.Namespace) -> None:
    """The ``--engines`` mode: see the module docstring."""
    import subprocess as sp

    import torch

    from rsseg.checkpoint import save_model
    from rsseg.inference.engines import FILE_ENGINES, cached_onnx

    budgets = [float(b) for b in args.buffer_mb.split(",")] if args.buffer_mb else [None]
    # a variant: an engine (-noarena: without ONNX Runtime's arena; -file: from the exported .onnx file)
    # at a width budget (None: predict_file's default), labelled e.g. onnx@320MB -> (engine, arena, file, budget)
    def parse(e: str) -> tuple[str, bool, bool]:
        parts = e.split("-")
        return parts[0], "noarena" not in parts, "file" in parts

    variants = {(e if b is None else f"{e}@{b:g}MB"): (*parse(e), b) for e in args.engines.split(",") if e for b in budgets}
    engines = list(variants)
    rows, export_s = [], None
    with tempfile.TemporaryDirectory(prefix="rsseg-engines-") as tmp:
        model, meta = build("unetformer", args.classes)
        ckpt = save_model(Path(tmp) / "unetformer.ckpt", model, meta)
        del model
        model_file = None
        if any(e in FILE_ENGINES for e, _, _, _ in variants.values()):
            t0 = time.perf_counter()
            model_file = shutil.copyfile(cached_onnx(ckpt), Path(tmp) / "model.onnx")  # what `rsseg export` writes
            export_s = time.perf_counter() - t0
            print(f"exported to ONNX in {export_s:.0f}s", file=sys.stderr)
        cases = []
        if not args.no_tanzania and TANZANIA.is_file():
            cases.append(("tanzania 4096x4096", TANZANIA))
        for size in filter(None, args.sizes.split(",")):
            w, h = parse_size(size)
            cases.append((f"generated {w}x{h}", generate(Path(tmp) / f"gen_{w}x{h}.tif", w, h)))
        for case, path in cases:
            for rep in range(args.reps):
                for engine in engines if rep % 2 == 0 else engines[::-1]:
                    name, arena, from_file, budget = variants[engine]
                    spec = dict(case=case, input=str(path), checkpoint=str(model_file if from_file else ckpt),
                                engine=name, arena=arena,
                                variant=engine, tile=args.tile, overlap=args.overlap, batch=args.batch,
                                bare_batches=args.bare_batches, workdir=tmp, buffer_mb=budget)
                    proc = sp.run([sys.executable, __file__, "--child-engine", json.dumps(spec)], capture_output=True,
                                  text=True)
                    row = (json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else
                           {"case": case, "engine": engine, "error": proc.stderr.strip().splitlines()[-1:]})
                    rows.append({**row, "rep": rep})
                    print(json.dumps(rows[-1]), file=sys.stderr)
    summary = []
    for case, _ in cases:
        by = {e: [r for r in rows if r["case"] == case and r.get("engine") == e and "error" not in r] for e in engines}
        if not all(by.values()):
            continue
        med = {e: {k: statistics.median(r[k] for r in by[e]) for k in
                   ("pipeline_s", "bare_s", "pipeline_mpix_s", "pipeline_vs_bare", "peak_rss_mb", "rss_loaded_mb")}
               for e in engines}
        item = {"case": case, **{f"{e}_{k}": v for e in engines for k, v in med[e].items()}}
        if {"torch", "onnx"} <= set(engines):
            item["onnx_vs_torch_pipeline"] = med["onnx"]["pipeline_s"] / med["torch"]["pipeline_s"]
            item["onnx_vs_torch_bare"] = med["onnx"]["bare_s"] / med["torch"]["bare_s"]
        summary.append(item)
    env = {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
           "cpus": os.cpu_count(), "loadavg_at_end": [round(v, 2) for v in os.getloadavg()], "argv": sys.argv[1:],
           "export_s": export_s}
    try:
        import onnxruntime

        env["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.tag}.json").write_text(json.dumps({"env": env, "summary": summary, "runs": rows}, indent=2))
    cols = ["case", "engine", "rep", "windows", "windows_run", "strips", "threads", "load_s", "pipeline_mpix_s", "bare_mpix_s", "pipeline_vs_bare",
            "rss_loaded_mb", "peak_rss_mb", "accumulator_mb", "torch_imported"]
    lines = [f"# predict: {', '.join(engines)}", "", f"env: `{json.dumps(env)}`", ""]
    if {"torch", "onnx"} <= set(engines):
        lines += ["| case | onnx/torch pipeline time | onnx/torch bare engine time | torch pipeline/bare | onnx pipeline/bare "
                  "| torch peak RSS MB | onnx peak RSS MB |", "|---|---|---|---|---|---|---|"]
        for it in summary:
            lines.append(f"| {it['case']} | {it['onnx_vs_torch_pipeline']:.3g} | {it['onnx_vs_torch_bare']:.3g} | "
                         f"{it['torch_pipeline_vs_bare']:.3g} | {it['onnx_pipeline_vs_bare']:.3g} | "
                         f"{it['torch_peak_rss_mb']:.0f} | {it['onnx_peak_rss_mb']:.0f} |")
    lines += ["", f"Per variant (pipeline time relative to {engines[0]}):", "",
              "| case | variant | pipeline time ratio | pipeline/bare | peak RSS MB |", "|---|---|---|---|---|"]
    for it in summary:
        for e in engines:
            lines.append(f"| {it['case']} | {e} | {it[f'{e}_pipeline_s'] / it[f'{engines[0]}_pipeline_s']:.3g} | "
                         f"{it[f'{e}_pipeline_vs_bare']:.3g} | {it[f'{e}_peak_rss_mb']:.0f} |")
    lines += ["", "All runs:", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['engine']} | error: {r['error']} |")
            continue
        lines.append("| " + " | ".join(f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    md = "\n".join(lines) + "\n"
    (args.out / f"{args.tag}.md").write_text(md)
    print(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help="generated rasters, WxH (k = 1024), comma-separated; '' for none")
    ap.add_argument("--model", choices=("tiny", "unetformer"), default="tiny", help="model for the generated sizes")
    ap.add_argument("--classes", type=int, default=7, help="classes of the generated-size model (LoveDA: 7)")
    ap.add_argument("--tanzania-model", choices=("tiny", "unetformer"), default="unetformer")
    ap.add_argument("--tanzania-classes", type=int, default=2, help="classes on Tanzania (building/background)")
    ap.add_argument("--no-tanzania", action="store_true", help="skip the real Tanzania raster")
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--overlap", type=int, default=256)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=3, help="interleaved pipeline / bare-forward repetitions per case")
    ap.add_argument("--tanzania-reps", type=int, default=3)
    ap.add_argument("--bare-batches", type=int, default=0,
                    help="batches timed per bare-forward measurement, scaled to all windows (0: all of them)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--engines", help="compare these inference engines (e.g. torch,onnx) instead; see the docstring")
    ap.add_argument("--buffer-mb", help="with --engines: width budgets (MB, comma-separated) to run each engine at")
    ap.add_argument("--tag", default="predict_engines", help="with --engines: results file name")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-engine", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.child_engine:
        print(json.dumps(child_engine(json.loads(args.child_engine))))
        return
    if args.engines:
        run_engines(args)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="rsseg-bench-") as tmp:
        common = dict(tile=args.tile, overlap=args.overlap, batch=args.batch, device=args.device,
                      bare_batches=args.bare_batches, workdir=tmp)
        if not args.no_tanzania:
            if TANZANIA.is_file():
                spec = dict(case="tanzania 4096x4096", input=str(TANZANIA), model=args.tanzania_model,
                            classes=args.tanzania_classes, reps=args.tanzania_reps)
                rows.append(run_case({**common, **spec}))
                print(json.dumps(rows[-1]), file=sys.stderr)
            else:
                print(f"skipping Tanzania: {TANZANIA} not found", file=sys.stderr)
        for size in filter(None, args.sizes.split(",")):
            w, h = parse_size(size)
            t0 = time.perf_counter()
            path = generate(Path(tmp) / f"gen_{w}x{h}.tif", w, h)
            print(f"generated {w}x{h} in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
            spec = dict(case=f"generated {w}x{h}", input=str(path), model=args.model, classes=args.classes,
                        reps=args.reps)
            rows.append(run_case({**common, **spec}))
            path.unlink()  # free the disk before the next (possibly larger) raster
            print(json.dumps(rows[-1]), file=sys.stderr)
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
           "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
           "loadavg_at_end": [round(v, 2) for v in os.getloadavg()], "argv": sys.argv[1:]}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"predict_bench-{stamp}.json").write_text(json.dumps({"env": env, "results": rows}, indent=2))
    md = markdown(rows, f"# predict benchmark ({stamp})\n\nenv: `{json.dumps(env)}`")
    (args.out / f"predict_bench-{stamp}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
