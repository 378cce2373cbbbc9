"""Paired study: do the neural-collapse regularizers lift the rare classes of real imbalanced data?

Trains UNetFormer (resnet18, random init: no ImageNet weights offline) with the segmentation loss
alone (CE + Dice + aux, "ce") and with In2NeCT, CeCo, Region Rebalance (and optionally the NC
feature terms), one run per (method, seed). Runs with one seed are PAIRED: same initial model
weights, training windows, order, scales, crops, flips (own generators, see
``rsseg.data.datamodule``), so the per-seed difference to "ce" measures the method, not the draw.

Reports per-class IoU (the rare classes called out), mIoU, head/common/tail mIoU (training pixel
frequency terciles, CeCo's split) and the collapse diagnostics of the classifier's input
(``rsseg.metrics.collapse``) at the final validation, as mean +- sd over seeds and as per-seed
paired differences to "ce". JSON + Markdown to ``--out``.

CPU protocol (2 shared cores; every run validates once, after its last epoch):

    python bench/nc_study.py --dataset loveda --root ../shared/data/loveda_rural --scene rural \
        --epochs 8 --batches-per-epoch 2 --batch 6 --crop 192 --seeds 0 1 2 --tag loveda_rural

The papers' GPU protocol (In2NeCT on LoveDA): ImageNet-pretrained encoder, AdamW lr 6e-4 (backbone
6e-5), wd 0.01, cosine, batch 16, 512 crops, scales 0.5-1.5, flips + rotations, 50 epochs over
the full LoveDA train split (2522 tiles), flip + multi-scale TTA.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch

from rsseg.checkpoint import read_meta
from rsseg.runconfig import training_config
from rsseg.metrics import head_common_tail
from rsseg.training import train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
METHODS = {"ce": "none", "in2nect": "in2nect", "ceco": "ceco", "rr": "rr", "nc": "nc"}
DIAGNOSTICS = ("NC1", "delta_inter", "delta_intra", "delta_intra_unit", "equiangularity", "equinorm",
               "w_equiangularity", "w_max_angle", "nc3")


def final_validation(run_dir: Path) -> dict[str, float]:
    """The logged validation metrics of the last validation epoch (``val/...`` -> value)."""
    rows = [r for r in csv.DictReader((run_dir / "logs" / "version_0" / "metrics.csv").open()) if r.get("val/mIoU")]
    return {k[4:]: float(v) for k, v in rows[-1].items() if k.startswith("val/") and v not in ("", None)}


def run_one(method: str, seed: int, args: argparse.Namespace) -> dict:
    overrides = [
        f"optim.max_epochs={args.epochs}", f"optim.seed={seed}", f"optim.batch_size={args.batch}",
        f"optim.crop_size={args.crop}", f"optim.scales={json.dumps(args.scales)}", f"optim.lr={args.lr}",
        "optim.backbone_lr_factor=1.0", *args.set,
    ]
    if args.scene:
        overrides.append(f"dataset.scene={args.scene}")
    cfg = training_config(dataset=args.dataset, root=str(args.root), regularizers=[METHODS[method]], overrides=overrides)
    run_dir = args.work / args.tag / f"{method}-s{seed}"
    t0 = time.perf_counter()
    result = train(
        cfg, run_dir, progress=False,
        trainer_options={"limit_train_batches": args.batches_per_epoch, "check_val_every_n_epoch": args.epochs},
    )
    seconds = time.perf_counter() - t0
    meta = read_meta(result.last)
    val = final_validation(run_dir)
    if not args.keep_checkpoints:  # 140 MB each with the optimizer state; the metrics are in the logs
        for ckpt in run_dir.glob("*.ckpt"):
            ckpt.unlink()
    groups = head_common_tail(meta.class_pixel_freq)
    iou = {c: val.get(f"IoU/{c}", math.nan) for c in meta.classes}
    row = {"method": method, "seed": seed, "train_seconds": round(seconds, 1), "miou": val["mIoU"], "oa": val["OA"]}
    for g in ("head", "common", "tail"):
        vals = [iou[c] for c, gg in zip(meta.classes, groups) if gg == g and not math.isnan(iou[c])]
        row[f"{g}_miou"] = statistics.mean(vals) if vals else math.nan
    row.update({f"iou_{c}": v for c, v in iou.items()})
    row.update({d: val.get(d, math.nan) for d in DIAGNOSTICS})
    row["groups"] = dict(zip(meta.classes, groups))
    return row


def _metrics(rows: list[dict]) -> list[str]:
    return [k for k in rows[0] if k not in ("method", "seed", "groups")]


def _mean_sd(v: list[float]) -> dict:
    """Mean and sample sd, NaN when a value is NaN (e.g. the tail mIoU of a binary set, which has no tail)."""
    if any(x != x for x in v):
        return {"mean": math.nan, "sd": math.nan}
    return {"mean": statistics.mean(v), "sd": statistics.stdev(v) if len(v) > 1 else math.nan}


def summarise(rows: list[dict], methods: list[str]) -> dict:
    """mean/sd per method and per-seed paired differences to "ce"."""
    keys = _metrics(rows)
    summary, paired = {}, {}
    base = {r["seed"]: r for r in rows if r["method"] == "ce"}
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        summary[method] = {
            k: {**_mean_sd(v), "n": len(v)} for k in keys if (v := [r[k] for r in mine])
        }
        if method != "ce" and base:
            diffs = {k: [r[k] - base[r["seed"]][k] for r in mine if r["seed"] in base] for k in keys}
            paired[method] = {
                k: {"per_seed": d, **_mean_sd(d)} for k, d in diffs.items() if d
            }
    return {"summary": summary, "paired": paired}


def _pct(x: float) -> str:
    return "nan" if x != x else f"{100 * x:.2f}"


def _ms(c: dict, pct: bool = True) -> str:
    """'mean ± sd', or the single value when there is one run (no sd to report)."""
    f = (lambda x: _pct(x)) if pct else (lambda x: f"{x:.3f}")
    return f(c["mean"]) if c["sd"] != c["sd"] else f"{f(c['mean'])} ± {f(c['sd'])}"


def markdown(result: dict, rows: list[dict], env: dict) -> str:
    s, p = result["summary"], result["paired"]
    classes = [k[4:] for k in _metrics(rows) if k.startswith("iou_")]
    focus = [c for c in env["focus"] if c in classes]
    groups = rows[0]["groups"]
    lines = [
        f"# NC study: {env['tag']} ({env['date']}, {env['machine']})",
        "",
        f"Protocol: {env['protocol']}",
        "",
        f"Command: `{env['command']}`",
        "",
        "Head/common/tail (training pixel-frequency terciles): "
        + "; ".join(f"{g}: {', '.join(c for c in classes if groups[c] == g)}" for g in ("head", "common", "tail")),
        "",
        "## IoU (%), mean ± sd over seeds",
        "",
        "| method | runs | mIoU | head | common | tail | " + " | ".join(focus) + " |",
        "|---|---:|" + "---:|" * (4 + len(focus)),
    ]
    for m, v in s.items():
        cells = [v["miou"], v["head_miou"], v["common_miou"], v["tail_miou"], *[v[f"iou_{c}"] for c in focus]]
        lines.append(f"| {m} | {v['miou']['n']} | " + " | ".join(_ms(c) for c in cells) + " |")
    lines += ["", "## Paired differences to ce (IoU points; per seed, then mean ± sd)", "",
              "| method | mIoU | tail mIoU | " + " | ".join(focus) + " |", "|---|" + "---:|" * (2 + len(focus))]
    for m, v in p.items():
        cells = [v["miou"], v["tail_miou"], *[v[f"iou_{c}"] for c in focus]]
        lines.append(
            f"| {m} | "
            + " | ".join(
                ("n/a" if all(d != d for d in c["per_seed"]) else  # a column the data lacks (no tail class)
                 f"{' / '.join(f'{100 * d:+.1f}' for d in c['per_seed'])}"
                 + ("" if c["sd"] != c["sd"] else f" ({100 * c['mean']:+.2f} ± {100 * c['sd']:.2f})"))
                for c in cells
            )
            + " |"
        )
    lines += ["", "## All classes (IoU %, mean ± sd)", "", "| method | " + " | ".join(classes) + " |",
              "|---|" + "---:|" * len(classes)]
    for m, v in s.items():
        lines.append(f"| {m} | " + " | ".join(_ms(v[f"iou_{c}"]) for c in classes) + " |")
    diag = [d for d in DIAGNOSTICS if d in s.get("ce", {})]
    lines += ["", "## Collapse diagnostics of the classifier input (final validation; lower = more collapse)", "",
              "| method | " + " | ".join(diag) + " |", "|---|" + "---:|" * len(diag)]
    for m, v in s.items():
        lines.append(f"| {m} | " + " | ".join(_ms(v[d], pct=False) for d in diag) + " |")
    lines += ["", "## Runs", "", "| method | seed | mIoU | tail | " + " | ".join(focus) + " | Δ_inter | Δ_intra_unit | NC1 | train s |",
              "|---|---:|" + "---:|" * (len(focus) + 6)]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['seed']} | {_pct(r['miou'])} | {_pct(r['tail_miou'])} | "
            + " | ".join(_pct(r[f"iou_{c}"]) for c in focus)
            + f" | {r['delta_inter']:.3f} | {r['delta_intra_unit']:.3f} | {r['NC1']:.2f} | {r['train_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def merge(args: argparse.Namespace) -> None:
    """Write ``--tag``'s JSON/Markdown from the runs of the studies ``--merge`` names."""
    parts = [json.loads((args.out / f"nc_study_{tag}.json").read_text()) for tag in args.merge]
    rows = [r for part in parts for r in part["runs"]]
    seen = [(r["method"], r["seed"]) for r in rows]
    if len(set(seen)) != len(seen):  # e.g. --merge names the already merged --tag again
        dup = sorted({k for k in seen if seen.count(k) > 1})
        raise SystemExit(f"runs {dup} appear in more than one of {args.merge}; merge each run once")
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    rows.sort(key=lambda r: (r["seed"], methods.index(r["method"])))
    env = {**parts[0]["env"], "tag": args.tag}
    env["command"] = " && ".join(part["env"]["command"] for part in parts) + (
        f" && python bench/nc_study.py --tag {args.tag} --merge {' '.join(args.merge)}"
    )
    result = summarise(rows, methods)
    (args.out / f"nc_study_{args.tag}.json").write_text(json.dumps({"env": env, **result, "runs": rows}, indent=2))
    (args.out / f"nc_study_{args.tag}.md").write_text(markdown(result, rows, env))
    print(markdown(result, rows, env))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="loveda")
    p.add_argument("--root", type=Path, default=SHARED / "loveda_rural")
    p.add_argument("--scene", default="rural", help="LoveDA scene ('' for other datasets)")
    p.add_argument("--methods", nargs="+", default=["ce", "in2nect", "ceco", "rr"], choices=list(METHODS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batches-per-epoch", type=int, default=2)
    p.add_argument("--batch", type=int, default=6)
    p.add_argument("--crop", type=int, default=192)
    p.add_argument("--scales", nargs="+", type=float, default=[0.75, 1.0, 1.25])
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--set", nargs="*", default=[], help="extra config overrides key=value")
    p.add_argument("--focus", nargs="+", default=["barren", "road", "building"])
    p.add_argument("--tag", default="loveda_rural")
    p.add_argument("--keep-checkpoints", action="store_true")
    p.add_argument("--work", type=Path, default=Path("outputs/nc_study"))
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--merge", nargs="+", default=None, metavar="TAG",
                   help="combine the runs of earlier studies (e.g. one process per seed) into --tag, then exit")
    args = p.parse_args()
    if args.merge:
        merge(args)
        return
    if not args.root.is_dir():
        raise SystemExit(f"{args.root} not found; pass --root")
    args.out.mkdir(parents=True, exist_ok=True)
    env = {
        "tag": args.tag, "date": time.strftime("%Y-%m-%d"), "focus": args.focus,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
        + ("cuda " + torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"),
        "protocol": (
            f"UNetFormer resnet18 from scratch, {args.epochs} epochs x {args.batches_per_epoch} batches of {args.batch} "
            f"random {args.crop}px crops (scales {args.scales}, flips, rot90), AdamW lr {args.lr} (backbone too), "
            f"wd 0.01, cosine; seeds {args.seeds} paired; metrics on the {args.dataset} val split after the last epoch"
        ),
        "command": "python bench/nc_study.py " + " ".join(
            [f"--dataset {args.dataset}", f"--root {args.root}", f"--scene '{args.scene}'", f"--epochs {args.epochs}",
             f"--batches-per-epoch {args.batches_per_epoch}", f"--batch {args.batch}", f"--crop {args.crop}",
             "--scales " + " ".join(map(str, args.scales)), f"--lr {args.lr}",
             "--seeds " + " ".join(map(str, args.seeds)), "--methods " + " ".join(args.methods),
             "--focus " + " ".join(args.focus), f"--tag {args.tag}", *(["--set " + " ".join(args.set)] if args.set else [])]
        ),
    }
    rows: list[dict] = []
    # seed-major order: an interrupted study still holds complete paired comparisons for the first seeds
    for seed in args.seeds:
        for method in args.methods:
            row = run_one(method, seed, args)
            print(json.dumps({k: v for k, v in row.items() if k != "groups"}), flush=True)
            rows.append(row)
            result = summarise(rows, args.methods)
            (args.out / f"nc_study_{args.tag}.json").write_text(
                json.dumps({"env": env, **result, "runs": rows}, indent=2, allow_nan=True)
            )
            (args.out / f"nc_study_{args.tag}.md").write_text(markdown(result, rows, env))
    print(markdown(summarise(rows, args.methods), rows, env))


if __name__ == "__main__":
    main()
