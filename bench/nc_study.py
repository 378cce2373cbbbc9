"""The pre-registered regularizer study: k-fold cross-validation on LoveDA Rural, paired seeds, controls.

Protocol and decision rule: docs/science.md (written before the study ran). In short:

- All 28 LoveDA Rural tiles (Train 0-23 and Val 24-27 together), downsampled ``--factor`` times by
  block averaging (images) and block majority (labels), split into ``--folds`` folds of whole tiles,
  stratified by barren and road share (``rsseg.data.folds.kfold_split``).
- Per fold, one CE + Dice warm start (``--warm-steps`` steps, cosine learning rate) that every arm
  fine-tunes from, so each arm starts near the baseline's plateau and the comparison is about where
  the extra term moves a trained model, in the spirit of "tuning".
- Per fold, arm and seed, a fine-tune of ``--steps`` steps at a constant learning rate, scored on the
  fold's held-out tiles (one confusion matrix pooled over them) at every step in ``--eval-at``, with
  the collapse diagnostics of the classifier input on the held-out tiles and on a training sample.
  Runs with one seed are paired: same crops, flips, rotations and dropout masks in every arm.
- Noise floor: CE and In2NeCT rerun with seed 0 (same-method same-seed replicates), and CE-vs-CE
  differences between seeds.
- Summary: mIoU and tail IoU (road, barren) per arm with percentile-bootstrap 95% intervals over the
  fold x seed units, paired differences to CE and to the controls, and the decision rule's verdict.

One JSON + Markdown file per study in ``bench/results/`` with the commit, command, machine load and
wall time. The training step is rsseg's own (``SegmentationTask.training_step``: the same
segmentation loss and regularizers ``rsseg train`` uses); only the loop around it is the study's.

CPU (the pre-registered study, about an hour on 2 idle cores)::

    python bench/nc_study.py --root ../shared/data/loveda_rural --tag loveda_rural_cv

GPU, the papers' scale (full-resolution tiles, 512 crops, batch 16, ImageNet encoder; needs the
full LoveDA Train+Val Rural and a network or cached timm weights)::

    python bench/nc_study.py --gpu --root data/LoveDA --tag loveda_rural_cv_gpu
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch

from rsseg.checkpoint import ModelMeta
from rsseg.data.datasets.loveda import LoveDA, decode_loveda
from rsseg.data.folds import kfold_split
from rsseg.data.normalize import IMAGENET_MEAN, IMAGENET_STD
from rsseg.data.stats import log_prior_from_counts
from rsseg.metrics.collapse import CollapseStats
from rsseg.metrics.confusion import confusion_matrix
from rsseg.metrics.intervals import bootstrap_ci
from rsseg.metrics.segmentation import segmentation_scores
from rsseg.runconfig import training_config
from rsseg.training.task import SegmentationTask

REPO = Path(__file__).resolve().parents[1]
CLASSES = list(LoveDA.classes)
K = len(CLASSES)
IGNORE = 255
TAIL = ("road", "barren")
DIAGNOSTICS = ("nc1", "delta_inter", "delta_intra", "delta_intra_unit", "equiangularity", "equinorm", "nc3")

#: arm -> (regularizers, config overrides, learning-rate factor of the fine-tune)
ARMS: dict[str, tuple[list[str], list[str], float]] = {
    "ce": (["none"], [], 1.0),
    "ce_lr0.5": (["none"], [], 0.5),
    "ce_lr2": (["none"], [], 2.0),
    "ce_balanced": (["none"], ["loss.class_weights=median_frequency"], 1.0),
    "in2nect": (["in2nect"], [], 1.0),
    "in2nect_inter": (["in2nect"], ["loss.regularizers.in2nect.intra_weight=0"], 1.0),
    "in2nect_intra": (["in2nect"], ["loss.regularizers.in2nect.inter_weight=0"], 1.0),
    "in2nect_centred": (["in2nect"], ["loss.regularizers.in2nect.centre=true"], 1.0),
    "ceco": (["ceco"], [], 1.0),
    "rr": (["rr"], [], 1.0),
}
CONTROLS = ("ce_lr0.5", "ce_lr2", "ce_balanced")
CANDIDATES = ("in2nect", "in2nect_inter", "in2nect_intra", "in2nect_centred", "ceco", "rr")
REPLICATED = ("ce", "in2nect")

# Tiles live in module globals so forked workers share them without pickling.
TILES: dict[str, tuple[np.ndarray, np.ndarray]] = {}


@dataclass(frozen=True)
class Protocol:
    factor: int
    crop: int
    batch: int
    warm_steps: int
    warm_lr: float
    steps: int
    lr: float
    eval_at: tuple[int, ...]
    pretrained: bool
    device: str


# ------------------------------------------------------------------------------------------ data
def _block_mode(mask: np.ndarray, f: int) -> np.ndarray:
    """Majority label of each ``f x f`` block; ignored pixels vote only where nothing else does."""
    h, w = mask.shape[0] // f, mask.shape[1] // f
    blocks = mask[: h * f, : w * f].reshape(h, f, w, f).transpose(0, 2, 1, 3).reshape(h, w, f * f)
    counts = np.stack([(blocks == c).sum(-1) for c in range(K)], axis=-1)
    out = counts.argmax(-1).astype(np.uint8)
    out[counts.max(-1) == 0] = IGNORE
    return out


def load_tiles(root: Path, factor: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every LoveDA Rural tile of Train and Val: name -> (normalised image [3, h, w] float32, labels [h, w])."""
    tiles = {}
    mean = np.asarray(IMAGENET_MEAN, np.float32)[:, None, None]
    std = np.asarray(IMAGENET_STD, np.float32)[:, None, None]
    for split in ("Train", "Val"):
        folder = root / split / "Rural"
        for img in sorted((folder / "images_png").glob("*.png"), key=lambda p: int(p.stem) if p.stem.isdigit() else p.stem):
            with rasterio.open(img) as src:
                x = src.read(out_dtype=np.float32) / 255.0
            with rasterio.open(folder / "masks_png" / img.name) as src:
                y = decode_loveda(src.read(1), str(img), IGNORE)
            c, h, w = x.shape
            x = x[:, : h // factor * factor, : w // factor * factor].reshape(c, h // factor, factor, w // factor, factor).mean((2, 4))
            tiles[f"{split.lower()}/{img.stem}"] = (((x - mean) / std).astype(np.float32), _block_mode(y, factor))
    if len(tiles) < 4:
        raise SystemExit(f"found {len(tiles)} LoveDA Rural tiles under {root}: expected {{Train,Val}}/Rural/{{images_png,masks_png}}")
    return tiles


def class_shares(names: list[str]) -> np.ndarray:
    counts = np.zeros(K)
    for n in names:
        y = TILES[n][1]
        counts += np.bincount(y[y != IGNORE].ravel(), minlength=K)[:K]
    return counts / max(counts.sum(), 1)


def make_folds(k: int) -> list[list[str]]:
    names = sorted(TILES)
    strata = []
    for n in names:
        share = class_shares([n])
        strata.append((share[CLASSES.index("barren")], share[CLASSES.index("road")]))
    return kfold_split(names, k, strata)


def crops(names: list[str], rng: np.random.Generator, batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of random crops with random flips and quarter turns, drawn from ``rng`` only."""
    xs, ys = [], []
    for i in rng.integers(0, len(names), size=batch):
        x, y = TILES[names[i]]
        top = rng.integers(0, y.shape[0] - size + 1)
        left = rng.integers(0, y.shape[1] - size + 1)
        x, y = x[:, top:top + size, left:left + size], y[top:top + size, left:left + size]
        turns, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
        x, y = np.rot90(x, turns, axes=(1, 2)), np.rot90(y, turns)
        if flip:
            x, y = x[:, :, ::-1], y[:, ::-1]
        xs.append(np.ascontiguousarray(x))
        ys.append(np.ascontiguousarray(y))
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys)).long()


# ------------------------------------------------------------------------------------ training
def build_task(arm: str, seed: int, train_names: list[str], p: Protocol, lr: float, steps: int,
               schedule: str) -> SegmentationTask:
    regs, overrides, lr_factor = ARMS[arm]
    cfg = training_config(dataset="loveda", regularizers=regs, overrides=[
        *overrides, f"optim.lr={lr * lr_factor}", "optim.backbone_lr_factor=1.0", f"optim.schedule={schedule}",
        f"optim.max_epochs={steps}", "optim.warmup_epochs=0", f"optim.seed={seed}",
        f"model.pretrained={str(p.pretrained).lower()}",
    ])
    region = [sum(bool((TILES[n][1] == c).any()) for n in train_names) for c in range(K)]
    meta = ModelMeta(classes=CLASSES, colors=list(LoveDA.colors), bands=list(LoveDA.bands),
                     mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD), config=cfg.to_dict(),
                     class_pixel_freq=class_shares(train_names).tolist(),
                     class_region_freq=[r / len(train_names) for r in region])
    return SegmentationTask(cfg, meta, log_region_prior=log_prior_from_counts(region))


@torch.no_grad()
def score(task: SegmentationTask, names: list[str], device: str) -> dict:
    """Pooled confusion matrix and collapse diagnostics over whole tiles ``names``."""
    task.eval()
    conf = torch.zeros(K, K, dtype=torch.int64)
    stats = CollapseStats(K, task.cfg.model.embed_dim, IGNORE)
    for n in names:
        x, y = TILES[n]
        logits, emb = task.model.forward_with_embedding(torch.from_numpy(x)[None].to(device))
        yt = torch.from_numpy(y)[None].long()
        conf += confusion_matrix(logits.argmax(1).cpu(), yt, K, IGNORE)
        stats.update(emb.float().cpu(), yt)
    task.train()
    diag = stats.compute(task.model.classifier_weight.detach().cpu())
    return {"confusion": conf.tolist(), **{d: float(diag[d]) for d in DIAGNOSTICS if d in diag}}


def train_steps(task: SegmentationTask, names: list[str], rng: np.random.Generator, p: Protocol, steps: int,
                on_eval: dict[int, list[str]] | None = None) -> dict[int, dict]:
    """``steps`` optimiser steps of rsseg's training step on random crops; scores at ``on_eval``'s steps."""
    opt_cfg = task.configure_optimizers()
    opt, sched = opt_cfg["optimizer"], opt_cfg["lr_scheduler"]["scheduler"]
    out = {}
    task.train()
    for step in range(1, steps + 1):
        x, y = crops(names, rng, p.batch, p.crop)
        loss = task.training_step({"image": x.to(p.device), "mask": y.to(p.device)}, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if on_eval and step in on_eval:
            out[step] = score(task, on_eval[step], p.device)
    return out


def _worker_init() -> None:
    torch.set_num_threads(1)  # two single-threaded runs beat one two-threaded run on small batches
    warnings.filterwarnings("ignore")


def warm_start(fold: int, train: list[str], val: list[str], p: Protocol, work: Path) -> dict:
    t0 = time.perf_counter()
    torch.manual_seed(10_000 + fold)
    task = build_task("ce", 10_000 + fold, train, p, p.warm_lr, p.warm_steps, "cosine").to(p.device)
    rng = np.random.default_rng([10_000, fold])
    marks = sorted({max(1, p.warm_steps * i // 4) for i in range(1, 5)})
    curve = train_steps(task, train, rng, p, p.warm_steps, {s: val for s in marks})
    torch.save(task.model.state_dict(), work / f"warm_fold{fold}.pt")
    return {"fold": fold, "seconds": time.perf_counter() - t0,
            "curve": {s: _summary(r) for s, r in curve.items()}}


def fine_tune(arm: str, seed: int, fold: int, replicate: int, train: list[str], val: list[str], p: Protocol,
              work: Path) -> dict:
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    task = build_task(arm, seed * 100 + fold, train, p, p.lr, p.steps, "constant").to(p.device)
    task.model.load_state_dict(torch.load(work / f"warm_fold{fold}.pt", map_location=p.device))
    for reg in task.regularizers.values():  # e.g. CeCo with a fixed pixel classifier
        reg.attach(task.model)
    task.on_fit_start()  # seeds the regularizers' pixel sampling from optim.seed
    torch.manual_seed(seed)  # dropout masks paired across arms
    rng = np.random.default_rng([seed, fold])
    sample = train[:: max(1, len(train) // len(val))][: len(val)]
    evals = {s: val for s in p.eval_at}
    curve = train_steps(task, train, rng, p, p.steps, evals)
    final = curve[p.steps]
    train_diag = score(task, sample, p.device)
    digest = float(sum(v.double().sum() for v in task.model.state_dict().values() if v.is_floating_point()))
    return {"arm": arm, "seed": seed, "fold": fold, "replicate": replicate, "seconds": time.perf_counter() - t0,
            "curve": {s: _summary(r) for s, r in curve.items()}, "final": _summary(final),
            "confusion": final["confusion"], "train_diag": {d: train_diag.get(d, math.nan) for d in DIAGNOSTICS},
            "weights_digest": digest}


def _summary(r: dict) -> dict:
    scores = segmentation_scores(np.asarray(r["confusion"]), CLASSES)
    iou = {c: scores["per_class"][c]["iou"] for c in CLASSES}
    tail = [iou[c] for c in TAIL if iou[c] == iou[c]]
    return {"miou": scores["miou"], "oa": scores["oa"], "tail_iou": float(np.mean(tail)) if tail else math.nan,
            "iou": iou, **{d: r.get(d, math.nan) for d in DIAGNOSTICS}}


# ---------------------------------------------------------------------------------- analysis
def units(rows: list[dict], arm: str, key: str) -> dict[tuple[int, int], float]:
    return {(r["fold"], r["seed"]): _get(r["final"], key) for r in rows if r["arm"] == arm and r["replicate"] == 0}


def _get(final: dict, key: str) -> float:
    return final["iou"][key[4:]] if key.startswith("iou_") else final[key]


def paired(rows: list[dict], arm: str, base: str, key: str) -> list[float]:
    a, b = units(rows, arm, key), units(rows, base, key)
    return [a[u] - b[u] for u in sorted(a) if u in b]


def ci(values: list[float]) -> dict:
    mean, low, high = bootstrap_ci(values)
    return {"mean": mean, "low": low, "high": high, "n": len(values)}


def analyse(rows: list[dict]) -> dict:
    keys = ["miou", "tail_iou", "oa", *[f"iou_{c}" for c in CLASSES]]
    arms = [a for a in ARMS if any(r["arm"] == a for r in rows)]
    per_arm = {a: {k: ci(list(units(rows, a, k).values())) for k in keys} for a in arms}
    for a in arms:
        for split in ("val", "train"):
            for d in DIAGNOSTICS:
                vals = [(r["final"] if split == "val" else r["train_diag"]).get(d, math.nan)
                        for r in rows if r["arm"] == a and r["replicate"] == 0]
                per_arm[a][f"{split}_{d}"] = ci(vals)
    vs_ce = {a: {k: ci(paired(rows, a, "ce", k)) for k in keys} for a in arms if a != "ce"}
    # noise floor: same-method same-seed replicates, and CE vs CE with another seed
    replicate = {}
    for a in REPLICATED:
        pairs = [(r, o) for r in rows if r["arm"] == a and r["replicate"] == 1
                 for o in rows if o["arm"] == a and o["replicate"] == 0 and (o["fold"], o["seed"]) == (r["fold"], r["seed"])]
        replicate[a] = {"runs": len(pairs),
                        "bit_identical": sum(r["weights_digest"] == o["weights_digest"] for r, o in pairs),
                        "max_abs_miou_diff": max((abs(r["final"]["miou"] - o["final"]["miou"]) for r, o in pairs), default=math.nan)}
    ce = units(rows, "ce", "miou")
    ce_tail = units(rows, "ce", "tail_iou")
    seeds = sorted({s for _, s in ce})
    ce_vs_ce = {"miou": ci([ce[(f, s)] - ce[(f, t)] for (f, s) in ce for t in seeds if t == s + 1 and (f, t) in ce]),
                "tail_iou": ci([ce_tail[(f, s)] - ce_tail[(f, t)] for (f, s) in ce_tail for t in seeds if t == s + 1 and (f, t) in ce_tail])}
    return {"per_arm": per_arm, "vs_ce": vs_ce, "replicates": replicate, "ce_vs_ce": ce_vs_ce,
            "decision": decide(rows, per_arm, vs_ce, replicate)}


def decide(rows: list[dict], per_arm: dict, vs_ce: dict, replicate: dict) -> dict:
    """The pre-registered rule (docs/science.md), applied to every candidate regularizer."""
    best_control = max((c for c in CONTROLS if c in per_arm), key=lambda c: per_arm[c]["tail_iou"]["mean"], default=None)
    noise = max((v["max_abs_miou_diff"] for v in replicate.values() if v["max_abs_miou_diff"] == v["max_abs_miou_diff"]), default=0.0)
    verdicts = {}
    for arm in CANDIDATES:
        if arm not in vs_ce:
            continue
        tail, miou = vs_ce[arm]["tail_iou"], vs_ce[arm]["miou"]
        vs_control = ci(paired(rows, arm, best_control, "tail_iou")) if best_control else None
        checks = {
            "tail_gain": tail["low"] > 0,
            "miou_not_worse": miou["low"] > -0.005,
            "beats_best_control_on_tail": vs_control is not None and vs_control["low"] > 0,
            "above_noise_floor": tail["mean"] > noise,
        }
        verdicts[arm] = {"checks": checks, "passes": all(checks.values()), "vs_best_control_tail": vs_control}
    passing = [a for a, v in verdicts.items() if v["passes"]]
    winner = max(passing, key=lambda a: vs_ce[a]["tail_iou"]["mean"]) if passing else None
    return {"best_control": best_control, "noise_floor_miou": noise, "verdicts": verdicts, "winner": winner,
            "default": winner or "ce"}


# ------------------------------------------------------------------------------------ report
def _pct(x: float) -> str:
    return "nan" if x != x else f"{100 * x:.2f}"


def _ci(c: dict, signed: bool = False) -> str:
    if c["mean"] != c["mean"]:
        return "n/a"
    f = (lambda v: f"{100 * v:+.2f}") if signed else _pct
    return f"{f(c['mean'])} [{f(c['low'])}, {f(c['high'])}]"


def markdown(result: dict) -> str:
    env, a = result["env"], result["analysis"]
    lines = [f"# Regularizer study: {env['tag']}", "",
             f"{env['date']}; commit `{env['commit']}`; {env['machine']}; wall time {env['wall_seconds'] / 60:.1f} min; "
             f"load average {env['load_start']} at the start, {env['load_end']} at the end.", "",
             f"Command: `{env['command']}`", "", f"Protocol: {env['protocol']}", "",
             f"Folds (held-out tiles): {'; '.join(', '.join(f) for f in result['folds'])}", "",
             "## Scores (IoU %, mean over fold x seed units, bootstrap 95% interval)", "",
             "| arm | units | mIoU | tail (road, barren) | road | barren | building | water | forest |",
             "|---|---:|---|---|---|---|---|---|---|"]
    for arm, v in a["per_arm"].items():
        lines.append(f"| {arm} | {v['miou']['n']} | {_ci(v['miou'])} | {_ci(v['tail_iou'])} | "
                     + " | ".join(_ci(v[f'iou_{c}']) for c in ("road", "barren", "building", "water", "forest")) + " |")
    lines += ["", "## Paired differences to CE (IoU points, bootstrap 95% interval)", "",
              "| arm | mIoU | tail | road | barren |", "|---|---|---|---|---|"]
    for arm, v in a["vs_ce"].items():
        lines.append(f"| {arm} | " + " | ".join(_ci(v[k], signed=True) for k in ("miou", "tail_iou", "iou_road", "iou_barren")) + " |")
    cc = a["ce_vs_ce"]
    lines += ["", "## Noise floor", "",
              f"- CE vs CE, next seed, same fold: mIoU {_ci(cc['miou'], True)}, tail {_ci(cc['tail_iou'], True)} points.",
              *[f"- {arm} rerun with seed 0: {v['bit_identical']} of {v['runs']} bit-identical, largest mIoU difference "
                f"{100 * v['max_abs_miou_diff']:.3f} points." for arm, v in a["replicates"].items()],
              "", "## Decision", "", f"Best control on tail IoU: {a['decision']['best_control']}.", "",
              "| candidate | tail gain > 0 | mIoU not worse | beats best control on tail | above noise floor | passes |",
              "|---|---|---|---|---|---|"]
    for arm, v in a["decision"]["verdicts"].items():
        c = v["checks"]
        lines.append(f"| {arm} | " + " | ".join("yes" if c[k] else "no" for k in c) + f" | **{'yes' if v['passes'] else 'no'}** |")
    lines += ["", f"Default that follows: **{a['decision']['default']}**.", "",
              "## Collapse diagnostics (mean; val = held-out tiles, train = a training sample)", "",
              "| arm | " + " | ".join(f"{s} {d}" for s in ("val", "train") for d in ("nc1", "delta_inter", "delta_intra_unit", "nc3")) + " |",
              "|---|" + "---:|" * 8]
    for arm, v in a["per_arm"].items():
        lines.append(f"| {arm} | " + " | ".join(f"{v[f'{s}_{d}']['mean']:.3f}" for s in ("val", "train")
                                                for d in ("nc1", "delta_inter", "delta_intra_unit", "nc3")) + " |")
    lines += ["", "## Learning curves (mIoU %, mean over folds)", "",
              "Warm start (CE): " + ", ".join(f"step {s}: {_pct(np.mean([w['curve'][s]['miou'] for w in result['warm']]))}"
                                             for s in result["warm"][0]["curve"]), ""]
    steps = list(next(iter(result["runs"]))["curve"])
    lines += ["| arm | " + " | ".join(f"step {s}" for s in steps) + " |", "|---|" + "---:|" * len(steps)]
    for arm in a["per_arm"]:
        rs = [r for r in result["runs"] if r["arm"] == arm and r["replicate"] == 0]
        lines.append(f"| {arm} | " + " | ".join(_pct(np.mean([r['curve'][s]['miou'] for r in rs])) for s in steps) + " |")
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------- main
def _commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class Progress:
    """One line per finished task (works in logs and terminals alike), with an ETA."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.t0 = total, 0, time.perf_counter()

    def __call__(self, what: str) -> None:
        self.done += 1
        spent = time.perf_counter() - self.t0
        eta = spent / self.done * (self.total - self.done)
        print(f"[{self.done}/{self.total}] {what}  {spent / 60:.1f} min, ~{eta / 60:.1f} min left", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data" / "loveda_rural",
                    help="LoveDA root with {Train,Val}/Rural/{images_png,masks_png}")
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--factor", type=int, default=4, help="downsample tiles by this factor (4: 0.3 m -> 1.2 m)")
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--warm-steps", type=int, default=300)
    ap.add_argument("--warm-lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=30, help="fine-tune steps of every arm")
    ap.add_argument("--lr", type=float, default=2.5e-4, help="fine-tune learning rate (arms scale it)")
    ap.add_argument("--eval-at", type=int, nargs="+", default=None, help="fine-tune steps to score at (default: thirds)")
    ap.add_argument("--workers", type=int, default=2, help="single-threaded worker processes")
    ap.add_argument("--gpu", action="store_true",
                    help="the papers' scale: full-resolution tiles, 512 crops, batch 16, ImageNet encoder, CUDA")
    ap.add_argument("--tag", default="loveda_rural_cv")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "nc_study")
    args = ap.parse_args(argv)
    if args.gpu:
        args.factor, args.crop, args.batch, args.workers = 1, 512, 16, 1
        args.warm_steps, args.steps, args.warm_lr, args.lr = 8000, 2000, 5e-4, 1e-4
    eval_at = tuple(args.eval_at or sorted({max(1, args.steps * i // 3) for i in range(1, 4)}))
    if eval_at[-1] != args.steps:
        eval_at = (*eval_at, args.steps)
    p = Protocol(args.factor, args.crop, args.batch, args.warm_steps, args.warm_lr, args.steps, args.lr, eval_at,
                 pretrained=args.gpu, device="cuda" if args.gpu else "cpu")
    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device")

    t0, load_start, commit = time.perf_counter(), os.getloadavg(), _commit()  # the code that runs, not what HEAD is at the end
    TILES.update(load_tiles(args.root, args.factor))
    folds = make_folds(args.folds)
    work = args.work / args.tag
    work.mkdir(parents=True, exist_ok=True)
    split = [([n for n in sorted(TILES) if n not in f], f) for f in folds]
    runs = [(a, s, f, 0) for f in range(args.folds) for s in args.seeds for a in args.arms]
    runs += [(a, args.seeds[0], f, 1) for f in range(args.folds) for a in REPLICATED if a in args.arms]
    progress = Progress(len(folds) + len(runs))
    print(f"{len(TILES)} tiles, {args.folds} folds, {len(args.arms)} arms x {len(args.seeds)} seeds "
          f"(+{len(runs) - len(args.arms) * len(args.seeds) * args.folds} replicates): {len(runs)} fine-tunes", flush=True)
    ctx = mp.get_context("fork")
    with ctx.Pool(args.workers, initializer=_worker_init) as pool:
        warm = []
        for w in pool.starmap(warm_start, [(f, tr, va, p, work) for f, (tr, va) in enumerate(split)]):
            warm.append(w)
            progress(f"warm start fold {w['fold']}: mIoU {_pct(w['curve'][p.warm_steps]['miou'])}")
        pending = [pool.apply_async(fine_tune, (a, s, f, r, *split[f], p, work)) for a, s, f, r in runs]
        rows = []
        for job in pending:
            r = job.get()
            rows.append(r)
            progress(f"{r['arm']} seed {r['seed']} fold {r['fold']}{' (replicate)' if r['replicate'] else ''}: "
                     f"mIoU {_pct(r['final']['miou'])}, tail {_pct(r['final']['tail_iou'])}")
    env = {
        "tag": args.tag, "date": time.strftime("%Y-%m-%d %H:%M"), "commit": commit,
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.workers} workers x 1 thread",
        "load_start": [round(x, 2) for x in load_start], "load_end": [round(x, 2) for x in os.getloadavg()],
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "protocol": (f"LoveDA Rural, {len(TILES)} tiles downsampled x{p.factor}, {args.folds}-fold CV; warm start CE + Dice "
                     f"{p.warm_steps} steps (cosine from lr {p.warm_lr}); fine-tune {p.steps} steps at lr {p.lr} (constant); "
                     f"batch {p.batch} crops of {p.crop} px with flips and quarter turns; UNetFormer resnet18, "
                     f"{'ImageNet' if p.pretrained else 'random'} init; seeds {args.seeds}; scored at steps {list(p.eval_at)}"),
    }
    result = {"env": env, "folds": folds, "warm": warm, "runs": rows}
    result["analysis"] = analyse(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"nc_study_{args.tag}.json").write_text(json.dumps(result, indent=1, default=float))
    (args.out / f"nc_study_{args.tag}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
