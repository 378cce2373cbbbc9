"""Small study on real data: does a neural-collapse regularizer help UNetFormer from scratch?

Trains UNetFormer (resnet18 encoder, random init) on ../shared/data/oam_kampala/train with the
segmentation loss alone (CE + Dice) and with In2NeCT, CeCo and Region Rebalance, several seeds
each, identical epochs and data order per seed; evaluates every best checkpoint on the Kampala val
split and on the Tanzania mosaic (a different country: a transfer test), and records building
IoU, mIoU and the collapse degrees Delta_inter / Delta_intra of the last validation epoch.

    python bench/nc_study.py --epochs 8 --seeds 0 1 2 --out bench/results
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from rsseg.checkpoint import load_model
from rsseg.config import training_config
from rsseg.evaluation import evaluate_checkpoint, evaluate_rasters
from rsseg.inference import Predictor, predict_file
from rsseg.metrics import segmentation_scores
from rsseg.training import train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
METHODS = {"ce": [], "in2nect": ["in2nect"], "ceco": ["ceco"], "rr": ["rr"]}


def last_val_collapse(run_dir: Path) -> dict[str, float]:
    rows = [r for r in csv.DictReader((run_dir / "logs" / "version_0" / "metrics.csv").open()) if r.get("val/delta_inter")]
    last = rows[-1]
    return {"delta_inter": float(last["val/delta_inter"]), "delta_intra": float(last["val/delta_intra"])}


def run_one(method: str, seed: int, args: argparse.Namespace, work: Path) -> dict:
    cfg = training_config(
        dataset="folder",
        root=str(args.data / "oam_kampala"),
        regularizers=METHODS[method] or ["none"],
        overrides=[f"optim.max_epochs={args.epochs}", f"optim.seed={seed}", f"optim.batch_size={args.batch}",
                   f"optim.crop_size={args.crop}", "optim.lr=1e-3", "optim.backbone_lr_factor=1.0"],
    )
    run_dir = work / f"{method}-s{seed}"
    t0 = time.perf_counter()
    result = train(cfg, run_dir, progress=False)
    train_s = time.perf_counter() - t0
    ckpt = result.best or result.last
    conf, meta = evaluate_checkpoint(ckpt, split="val", tile=256, overlap=0)
    val = segmentation_scores(conf, meta["classes"])
    model, meta_obj = load_model(ckpt)
    predictor = Predictor.from_model(model, meta_obj, tile=512, overlap=64, batch=4, tta="none", device="auto")
    pred_tif = run_dir / "tanzania_classes.tif"
    predict_file(predictor, args.data / "oam_tanzania" / "tanzania_west_rgb.tif", pred_tif, overwrite=True)
    tz = segmentation_scores(
        evaluate_rasters(pred_tif, args.data / "oam_tanzania" / "tanzania_west_buildings.tif", num_classes=2),
        meta["classes"],
    )
    return {
        "method": method, "seed": seed, "train_seconds": round(train_s, 1),
        "val_building_iou": val["per_class"]["building"]["iou"], "val_miou": val["miou"],
        "tanzania_building_iou": tz["per_class"]["building"]["iou"], "tanzania_miou": tz["miou"],
        **last_val_collapse(run_dir),
    }


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        entry = {"method": method, "runs": len(mine)}
        for key in ("val_building_iou", "tanzania_building_iou", "val_miou", "delta_inter", "delta_intra"):
            values = [r[key] for r in mine]
            entry[key] = statistics.mean(values)
            entry[key + "_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out.append(entry)
    return out


def markdown(summary: list[dict], rows: list[dict], env: dict) -> str:
    lines = [
        f"# NC study on oam_kampala ({env['date']}, {env['machine']}, {env['epochs']} epochs, seeds {env['seeds']})",
        "",
        f"Command: `{env['command']}`",
        "",
        "| method | runs | val building IoU | Tanzania building IoU | val mIoU | Delta_inter | Delta_intra |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summary:
        def ms(key: str, pct: bool = True) -> str:
            f = 100 if pct else 1
            return f"{f * s[key]:.2f} ± {f * s[key + '_sd']:.2f}"
        lines.append(
            f"| {s['method']} | {s['runs']} | {ms('val_building_iou')} | {ms('tanzania_building_iou')} | "
            f"{ms('val_miou')} | {ms('delta_inter', False)} | {ms('delta_intra', False)} |"
        )
    lines += ["", "Per run:", "", "| method | seed | val bIoU | Tanzania bIoU | Delta_inter | Delta_intra | train s |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['seed']} | {100 * r['val_building_iou']:.2f} | {100 * r['tanzania_building_iou']:.2f} | "
            f"{r['delta_inter']:.3f} | {r['delta_intra']:.3f} | {r['train_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=SHARED, help="folder holding oam_kampala/ and oam_tanzania/")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--work", type=Path, default=Path("outputs/nc_study"))
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    args = p.parse_args()
    if not (args.data / "oam_kampala").is_dir():
        raise SystemExit(f"{args.data}/oam_kampala not found; pass --data")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    # seed-major order: an interrupted study still holds complete comparisons for the first seeds
    for seed in args.seeds:
        for method in args.methods:
            row = run_one(method, seed, args, args.work)
            print(json.dumps(row), flush=True)
            rows.append(row)
    env = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
        + ("cuda " + torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"),
        "epochs": args.epochs, "seeds": args.seeds,
        "command": "python bench/nc_study.py " + " ".join(
            [f"--epochs {args.epochs}", "--seeds " + " ".join(map(str, args.seeds)), "--methods " + " ".join(args.methods)]
        ),
    }
    summary = summarise(rows)
    (args.out / "nc_study.json").write_text(json.dumps({"env": env, "summary": summary, "runs": rows}, indent=2))
    (args.out / "nc_study.md").write_text(markdown(summary, rows, env))
    print(markdown(summary, rows, env))


if __name__ == "__main__":
    main()
