"""UNetFormer forward speed (images/s) at 512x512 and 1024x1024, batch 1 and 8.

Eval mode under ``torch.inference_mode``. On CPU: float32 with few iterations. On CUDA: float32
and bf16 autocast + channels_last, side by side in one run. For reference, the UNetFormer paper
(Wang et al., ISPRS JPRS 2022, Table 9) reports 322.4 FPS at 512x512 on an RTX 3090.

    python bench/model_speed.py --device auto --out bench/results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from rsseg.config import ModelConfig
from rsseg.io import atomic_path
from rsseg.models import build_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model: torch.nn.Module, device: torch.device, batch: int, size: int, mode: str, warmup: int, iters: int) -> dict:
    """Images per second of ``model`` on a [batch, 3, size, size] input in the given precision mode."""
    channels_last = mode == "bf16+channels_last"
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=memory_format)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if channels_last else nullcontext()
    with torch.inference_mode(), autocast:
        for _ in range(warmup):
            model(x)
        _sync(device)
        start = time.perf_counter()
        for _ in range(iters):
            model(x)
        _sync(device)
        elapsed = time.perf_counter() - start
    row = {
        "mode": mode,
        "size": size,
        "batch": batch,
        "iters": iters,
        "ms_per_batch": 1000 * elapsed / iters,
        "images_per_s": batch * iters / elapsed,
    }
    if device.type == "cuda":
        row["peak_mem_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        torch.cuda.reset_peak_memory_stats(device)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--iters", type=int, default=None, help="timed iterations (default 3 on CPU, 50 on CUDA)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed iterations (default 1 on CPU, 10 on CUDA)")
    args = parser.parse_args()

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device")
    device = torch.device("cuda" if args.device in ("cuda", "auto") and torch.cuda.is_available() else "cpu")
    iters = args.iters or (50 if device.type == "cuda" else 3)
    warmup = args.warmup if args.warmup is not None else (10 if device.type == "cuda" else 1)
    modes = ["fp32", "bf16+channels_last"] if device.type == "cuda" else ["fp32"]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    torch.manual_seed(0)
    model = build_model(ModelConfig(), num_classes=6, in_channels=3).to(device).eval()
    rows = []
    for size in args.sizes:
        for batch in args.batches:
            for mode in modes:
                row = measure(model, device, batch, size, mode, warmup, iters)
                rows.append(row)
                print(f"{mode:>20} {size:>5}px batch {batch:>2}: {row['images_per_s']:8.2f} img/s ({row['ms_per_batch']:.1f} ms/batch)", flush=True)

    env = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "model": "UNetFormer resnet18, 6 classes, eval, inference_mode",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out / "model_speed.json") as tmp:
        tmp.write_text(json.dumps({"env": env, "results": rows}, indent=2))
    lines = [
        "# UNetFormer forward speed",
        "",
        f"Device: {env['device']} ({device.type}), torch {env['torch']}, {env['cpu_threads']} CPU threads, "
        f"load average {env['load_average'][0]:.1f}. Paper: 322.4 FPS at 512x512 on an RTX 3090.",
        "",
        "| mode | size | batch | ms / batch | images / s |",
        "|---|---|---|---|---|",
        *(f"| {r['mode']} | {r['size']} | {r['batch']} | {r['ms_per_batch']:.1f} | {r['images_per_s']:.2f} |" for r in rows),
        "",
    ]
    with atomic_path(args.out / "model_speed.md") as tmp:
        tmp.write_text("\n".join(lines))
    print(f"wrote {args.out / 'model_speed.json'} and {args.out / 'model_speed.md'}")


if __name__ == "__main__":
    main()
