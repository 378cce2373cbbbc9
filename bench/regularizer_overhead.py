"""Training-step overhead of each neural-collapse regularizer on UNetFormer.

One step = forward + loss + backward + AdamW step. Variants ("seg" = CE + Dice + aux alone, then
seg + in2nect / ceco / rr / nc) are timed side by side in one run: each repeat runs every variant
once in a freshly shuffled order, and the reported figure is the median step time of a variant
divided by the median of "seg". Papers report +10.5% (In2NeCT, Table 4) and +10-18% (CeCo,
Table 11) training time on GPUs.

    .venv/bin/python bench/regularizer_overhead.py                # CPU, batch 2 x 3 x 256 x 256
    .venv/bin/python bench/regularizer_overhead.py --device cuda --batch 16 --size 512 --precision bf16
    .venv/bin/python bench/regularizer_overhead.py --batch 4 --size 512 --variants seg,in2nect,ceco \
        --repeats 15 --name regularizer_overhead_b4_512

``--precision bf16`` runs forward and losses under bf16 autocast (CUDA only; the regularizers
themselves switch autocast off and compute in float32, as in training with bf16-mixed).

Writes ``<name>.json`` and ``<name>.md`` under ``--out`` (name: ``regularizer_overhead``). The
median ratio is the headline; the json and md also give the min-max of per-repeat ratios (each
variant's step over the "seg" step of the same repeat), which shows how much the shared machine's
noise moves it.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

import torch

from rsseg.config import ModelConfig
from rsseg.data.stats import log_prior_from_counts
from rsseg.losses import SegmentationLoss, build_regularizers
from rsseg.losses.regularizers import regularizers_config
from rsseg.models import build_model

VARIANTS = ("seg", "in2nect", "ceco", "rr", "nc")


def _labels(batch: int, size: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Blocky, imbalanced labels (class k covers ~1/2^k of the blocks) with 5% ignore."""
    blocks = torch.rand(batch, size // 16, size // 16, generator=generator)
    labels = torch.clamp((-torch.log2(blocks.clamp_min(1e-6))).long(), max=num_classes - 1)
    labels = labels.repeat_interleave(16, 1).repeat_interleave(16, 2)
    labels[torch.rand(labels.shape, generator=generator) < 0.05] = 255
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--classes", type=int, default=7)
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--precision", choices=("32", "bf16"), default="32", help="bf16: autocast, CUDA only")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated; seg is always timed")
    parser.add_argument("--name", default="regularizer_overhead", help="output file stem")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    variants = ["seg"] + [v for v in args.variants.split(",") if v and v != "seg"]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}: choose from {','.join(VARIANTS)}")

    device = torch.device(args.device)
    if args.precision == "bf16" and device.type != "cuda":
        parser.error("--precision bf16 is for CUDA (bf16 autocast); on the CPU use --precision 32")
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    k = args.classes
    model_cfg = ModelConfig(encoder=args.encoder)
    model = build_model(model_cfg, num_classes=k, in_channels=3).to(device).train()
    cfg = regularizers_config()
    for name in VARIANTS[1:]:
        getattr(cfg, name).enabled = True
    prior = log_prior_from_counts([2.0 ** -i for i in range(k)])
    regs = build_regularizers(cfg, k, model_cfg.embed_dim, log_region_prior=prior).to(device)
    seg_loss = SegmentationLoss(k)
    params = list(model.parameters()) + list(regs.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    images = torch.randn(args.batch, 3, args.size, args.size, generator=gen).to(device)
    labels = _labels(args.batch, args.size, k, gen).to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step(variant: str) -> float:
        sync()
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            out = model(images)
            terms = seg_loss(out["logits"], labels, out.get("aux"))
            if variant != "seg":
                terms.update(regs[variant](out["embedding"], labels))
        torch.stack([v.float() for v in terms.values()]).sum().backward()
        opt.step()
        sync()
        return time.perf_counter() - start

    for _ in range(args.warmup):
        for v in variants:
            step(v)
    times: dict[str, list[float]] = {v: [] for v in variants}
    order = list(variants)
    rng = random.Random(0)
    for _ in range(args.repeats):
        rng.shuffle(order)
        for v in order:
            times[v].append(step(v))

    base = statistics.median(times["seg"])
    rows = [
        {
            "variant": v,
            "median_s": statistics.median(times[v]),
            "ratio_vs_seg": statistics.median(times[v]) / base,
            # best-of ratio: robust when other processes share the CPU and inflate some steps
            "min_s": min(times[v]),
            "ratio_min_vs_seg": min(times[v]) / min(times["seg"]),
            # per-repeat ratios (same repeat, so the same machine load): their spread is the noise
            "repeat_ratio_min": min(paired := [t / s for t, s in zip(times[v], times["seg"])]),
            "repeat_ratio_max": max(paired),
            "times_s": times[v],
        }
        for v in variants
    ]
    result = {
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "host": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "size": args.size,
        "classes": k,
        "encoder": args.encoder,
        "repeats": args.repeats,
        "precision": args.precision,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# Regularizer overhead ({result['device']}, batch {args.batch}x3x{args.size}x{args.size}, "
        f"{args.encoder}, precision {args.precision}, {args.repeats} interleaved repeats, median)",
        "",
        "| variant | median step (s) | ratio vs CE+Dice (median) | per-repeat ratio min-max | best step (s) | ratio (best) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['variant']} | {r['median_s']:.4f} | {r['ratio_vs_seg']:.3f} | "
        f"{r['repeat_ratio_min']:.3f}-{r['repeat_ratio_max']:.3f} | {r['min_s']:.4f} | {r['ratio_min_vs_seg']:.3f} |"
        for r in rows
    ]
    (args.out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
