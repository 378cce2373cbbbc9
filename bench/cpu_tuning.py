"""Which CPU tunings speed up the torch engine: one UNetFormer forward, variants interleaved.

Variants (each a ratio to ``eager``: ``torch.no_grad``, float32, contiguous, default threads):
``inference_mode``; ``+channels_last``; ``+bf16`` (CPU autocast, only meaningful where the CPU has
native bf16: ``avx512_bf16``/``amx_bf16`` in /proc/cpuinfo); ``threads=N`` for 1..physical cores;
and ``onnxruntime`` on the exported graph when ``--onnx`` names a .onnx file. Repetitions are
interleaved so every variant sees the same machine load; medians are reported.

    python bench/cpu_tuning.py --size 512 --reps 5 --out bench/results
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from rsseg.config import ModelConfig
from rsseg.inference.engines import physical_cores
from rsseg.models import build_model


def native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--classes", type=int, default=7)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--onnx", type=Path, help="an exported model of the same architecture (rsseg export)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = build_model(ModelConfig(pretrained=False), num_classes=args.classes, in_channels=3).eval()
    x = torch.randn(args.batch, 3, args.size, args.size)
    cores = physical_cores()
    default_threads = torch.get_num_threads()

    def variant(mode: str = "no_grad", channels_last: bool = False, bf16: bool = False, threads: int | None = None):
        def run() -> float:
            torch.set_num_threads(threads or default_threads)
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            m, xx = model.to(memory_format=fmt), x.contiguous(memory_format=fmt)
            ctx = torch.inference_mode() if mode == "inference_mode" else torch.no_grad()
            cast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
            with ctx, cast:
                t0 = time.perf_counter()
                m(xx)
                return time.perf_counter() - t0
        return run

    variants = {"eager": variant(), "inference_mode": variant("inference_mode"),
                "inference_mode+channels_last": variant("inference_mode", channels_last=True),
                "inference_mode+bf16": variant("inference_mode", bf16=True),
                "inference_mode+channels_last+bf16": variant("inference_mode", channels_last=True, bf16=True)}
    for n in sorted({1, cores}):
        variants[f"inference_mode+threads={n}"] = variant("inference_mode", threads=n)
    if args.onnx:
        from rsseg.inference.engines import OnnxEngine

        engine = OnnxEngine(args.onnx)
        xn = x.numpy()

        def ort_run() -> float:
            t0 = time.perf_counter()
            engine._logits(np.ascontiguousarray(xn))
            return time.perf_counter() - t0
        variants["onnxruntime"] = ort_run
    for run in variants.values():  # warm-up
        run()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.reps):
        for name, run in variants.items():
            times[name].append(run())
    base = statistics.median(times["eager"])
    rows = [{"variant": k, "median_s": statistics.median(v), "vs_eager": statistics.median(v) / base,
             "min_s": min(v), "max_s": max(v)} for k, v in times.items()]
    env = {"torch": torch.__version__, "default_threads": default_threads, "physical_cores": cores,
           "native_bf16": native_bf16(), "size": args.size, "batch": args.batch, "reps": args.reps,
           "loadavg": [round(v, 2) for v in __import__("os").getloadavg()]}
    md = [f"# torch CPU tuning, UNetFormer {args.batch}x3x{args.size}x{args.size}", "", f"env: `{json.dumps(env)}`", "",
          "| variant | median s | vs eager | min s | max s |", "|---|---|---|---|---|"]
    md += [f"| {r['variant']} | {r['median_s']:.3f} | {r['vs_eager']:.3f} | {r['min_s']:.3f} | {r['max_s']:.3f} |" for r in rows]
    text = "\n".join(md) + "\n"
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "cpu_tuning.json").write_text(json.dumps({"env": env, "rows": rows}, indent=2))
        (args.out / "cpu_tuning.md").write_text(text)


if __name__ == "__main__":
    main()
