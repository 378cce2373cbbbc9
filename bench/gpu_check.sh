#!/usr/bin/env bash
# One-call GPU check: everything this project measured on 2 CPU cores, on one CUDA GPU,
# in under 8 minutes. Steps, each writing bench/results/gpu-<step>.{json,md}:
#   1. model speed at 512x512, batch 1 and 8: fp32 eager, bf16 + channels_last, and the same under
#      torch.compile (bench/model_speed.py), beside the paper's 322.4 FPS on an RTX 3090;
#   2. a short training on sample_tiles with bf16-mixed (rsseg train), and each regularizer's
#      training-step overhead (bench/regularizer_overhead.py, batch 16 x 512 x 512);
#   3. predict throughput (MPix/s) and peak GPU memory of rsseg's streaming pipeline on a generated
#      16384 x 16384 raster (bench/predict_bench.py's generator and model), plus gpu-summary.md.
#
# Usage:  bench/gpu_check.sh [--dry-run] [--out DIR]
#   --dry-run  the same steps at tiny sizes on the CPU (about a minute; part of `make test`);
#              results go to a fresh temporary folder unless --out is given.
#   PYTHON=/path/to/python overrides the interpreter (default .venv/bin/python).
# Exits non-zero at the first failing step, naming it.
set -Eeuo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-.venv/bin/python}
DRY=0
OUT=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --out) OUT=${2:?--out needs a folder}; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done

STEP="setup"
trap 'echo "gpu_check: FAILED in step \"$STEP\" (line $LINENO, exit $?); results so far in $OUT" >&2' ERR
[[ -x "$PY" ]] || command -v "$PY" >/dev/null || { echo "gpu_check: no Python at '$PY'; make install, or set PYTHON=" >&2; exit 2; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rsseg-gpu-check.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
export PYTHONUNBUFFERED=1

if [[ $DRY == 1 ]]; then
    OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/rsseg-gpu-check-dry.XXXXXX")}
    DEVICE=cpu
    # one thread: on a shared, oversubscribed CPU OpenMP's spinning threads make each op many times slower
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    # a 4 + 2 tile subset of sample_tiles: the same training code path in seconds
    TRAIN_ROOT=$WORK/tiles
    for split_n in train:4 val:2; do
        split=${split_n%:*}
        mkdir -p "$TRAIN_ROOT/$split/images" "$TRAIN_ROOT/$split/masks"
        files=("sample_tiles/$split/images"/*)
        for f in "${files[@]:0:${split_n#*:}}"; do
            f=${f##*/}
            ln -s "$PWD/sample_tiles/$split/images/$f" "$TRAIN_ROOT/$split/images/$f"
            ln -s "$PWD/sample_tiles/$split/masks/$f" "$TRAIN_ROOT/$split/masks/$f"
        done
    done
    SPEED_ARGS=(--sizes 64 --batches 1 --repeats 2 --iters 1 --warmup 1
                --variants eager inference_mode+bf16+channels_last)  # compile left out: minutes of C++ builds on a CPU
    TRAIN_ARGS=(--max-epochs 1 --batch-size 2 optim.crop_size=64)
    REG_ARGS=(--batch 1 --size 64 --repeats 1 --warmup 1)
    PREDICT_SIZE=512 PREDICT_TILE=256 PREDICT_OVERLAP=64 PREDICT_BATCH=2 PREDICT_BARE=1
else
    OUT=${OUT:-bench/results}
    DEVICE=cuda
    "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "gpu_check: torch sees no CUDA device (use --dry-run on a CPU)")'
    SPEED_ARGS=(--sizes 512 --batches 1 8 --repeats 10 --iters 20 --warmup 5)
    TRAIN_ARGS=(--max-epochs 4 --batch-size 8 optim.crop_size=256)
    REG_ARGS=(--batch 16 --size 512 --repeats 10 --warmup 2)
    TRAIN_ROOT=sample_tiles
    PREDICT_SIZE=16384 PREDICT_TILE=1024 PREDICT_OVERLAP=256 PREDICT_BATCH=8 PREDICT_BARE=8
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export GPU_CHECK_OUT=$OUT GPU_CHECK_DEVICE=$DEVICE GPU_CHECK_WORK=$WORK GPU_CHECK_DRY=$DRY
START=$SECONDS
step() { STEP=$1; echo "== [$((SECONDS - START))s] $1"; }

step "environment"
"$PY" - <<'EOF'
import json, os, platform, subprocess, torch
env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
       "device": torch.cuda.get_device_name(0) if os.environ["GPU_CHECK_DEVICE"] == "cuda" else platform.machine(),
       "dry_run": os.environ["GPU_CHECK_DRY"] == "1", "cpus": os.cpu_count()}
try:
    env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
except OSError:
    pass
json.dump(env, open(os.path.join(os.environ["GPU_CHECK_OUT"], "gpu-env.json"), "w"), indent=2)
print(json.dumps(env))
EOF

step "model speed"
"$PY" bench/model_speed.py --device "$DEVICE" "${SPEED_ARGS[@]}" --name gpu-model_speed --out "$OUT"

step "training (bf16-mixed, sample_tiles)"
"$PY" - "$TRAIN_ROOT" "${TRAIN_ARGS[@]}" <<'EOF'
import csv, json, os, subprocess, sys, time
from pathlib import Path

out, work = Path(os.environ["GPU_CHECK_OUT"]), Path(os.environ["GPU_CHECK_WORK"])
run_dir = work / "train"
cmd = [sys.executable, "-c", "from rsseg.cli.main import main; main()", "train", "--dataset", "folder",
       "--root", sys.argv[1], "--precision", "bf16-mixed", "--devices", "1", "-o", str(run_dir), *sys.argv[2:]]
print(" ".join(cmd[3:]), flush=True)
t0 = time.perf_counter()
subprocess.run(cmd, check=True)
wall = time.perf_counter() - t0
(metrics,) = run_dir.rglob("metrics.csv")
rows = list(csv.DictReader(metrics.open()))
val = [r for r in rows if r.get("val/mIoU") not in (None, "")]
epochs = len(val)
assert epochs, f"no validation epoch logged in {metrics}"
n_train = len(list(Path(sys.argv[1], "train", "images").iterdir()))
result = {"command": "rsseg " + " ".join(cmd[3:]), "wall_s": wall, "epochs": epochs, "train_tiles": n_train,
          "s_per_epoch_incl_startup": wall / epochs, "val_mIoU_per_epoch": [float(r["val/mIoU"]) for r in val]}
(out / "gpu-train.json").write_text(json.dumps(result, indent=2))
(out / "gpu-train.md").write_text(
    f"# Short training on {sys.argv[1]}, bf16-mixed\n\n`{result['command']}`\n\n"
    f"{epochs} epochs of {n_train} tiles in {wall:.1f} s wall (process start, data, validation and checkpoints "
    f"included); val mIoU per epoch: {', '.join(f'{v:.3f}' for v in result['val_mIoU_per_epoch'])}.\n")
print(json.dumps(result))
EOF

step "regularizer overhead"
"$PY" bench/regularizer_overhead.py --device "$DEVICE" "${REG_ARGS[@]}" --out "$WORK/reg"
cp "$WORK/reg/regularizer_overhead.json" "$OUT/gpu-regularizer_overhead.json"
cp "$WORK/reg/regularizer_overhead.md" "$OUT/gpu-regularizer_overhead.md"

step "predict ${PREDICT_SIZE}x${PREDICT_SIZE}"
"$PY" - "$PREDICT_SIZE" "$PREDICT_TILE" "$PREDICT_OVERLAP" "$PREDICT_BATCH" "$PREDICT_BARE" <<'EOF'
import json, os, statistics, sys, time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, "bench")
from predict_bench import TimedModel, build, generate, peak_rss_mb  # noqa: E402

import rasterio  # noqa: E402
from rsseg.inference import Predictor, plan_windows, predict_file  # noqa: E402
from rsseg.inference.windows import padded_size, reflect_pad  # noqa: E402

size, tile, overlap, batch, bare_batches = map(int, sys.argv[1:6])
out, work, device = Path(os.environ["GPU_CHECK_OUT"]), Path(os.environ["GPU_CHECK_WORK"]), torch.device(os.environ["GPU_CHECK_DEVICE"])
cuda = device.type == "cuda"
t0 = time.perf_counter()
raster = generate(work / f"gen_{size}.tif", size, size)
gen_s = time.perf_counter() - t0
model, meta = build("unetformer", 7)
timed = TimedModel(model)
pred = Predictor.from_model(timed, meta, tile=tile, overlap=overlap, batch=batch, tta="none", device=device)
with rasterio.open(raster) as src:
    windows = plan_windows(src.width, src.height, pred.settings.tile, pred.settings.overlap)
    tiles = [pred.normalise(src.read([1, 2, 3], window=w)) for w in windows[:batch]]
ph, pw = padded_size(tiles[0].shape[1]), padded_size(tiles[0].shape[2])
x = torch.from_numpy(np.stack([reflect_pad(t, ph, pw) for t in tiles])).to(device)
# the bare engine: the same model, precision (Predictor autocasts to bf16 on CUDA) and batch, logits only
autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)

def sync():
    if cuda:
        torch.cuda.synchronize(device)

def bare_s(n=bare_batches):
    with torch.inference_mode(), autocast:
        sync(); t = time.perf_counter()
        for _ in range(n):
            model(x)
        sync()
    return (time.perf_counter() - t) / n * (len(windows) / batch)

bare_s(1)  # warm-up: cuDNN autotuning, allocator
if cuda:
    torch.cuda.reset_peak_memory_stats(device)
t0 = time.perf_counter()
predict_file(pred, raster, work / "pred.tif", overwrite=True)
pipe = time.perf_counter() - t0
gpu_alloc = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
gpu_reserved = torch.cuda.max_memory_reserved(device) / 2**20 if cuda else None
rss = peak_rss_mb()
with rasterio.open(work / "pred.tif") as dst:
    assert (dst.width, dst.height) == (size, size), "predicted raster has the wrong size"
bare = statistics.median(bare_s() for _ in range(3))
mpix = size * size / 1e6
result = {"size": f"{size}x{size}", "model": "UNetFormer resnet18, 7 classes", "device": str(device),
          "tile": tile, "overlap": overlap, "batch": batch, "windows": len(windows), "generate_s": gen_s,
          "pipeline_s": pipe, "pipeline_mpix_s": mpix / pipe, "bare_forward_mpix_s": mpix / bare,
          "ratio_pipeline_vs_bare": bare / pipe, "model_s_in_pipeline": timed.seconds,
          "peak_gpu_allocated_mib": gpu_alloc, "peak_gpu_reserved_mib": gpu_reserved, "peak_rss_mb": rss}
(out / "gpu-predict.json").write_text(json.dumps(result, indent=2))
gpu = f"{gpu_alloc:.0f} MiB allocated, {gpu_reserved:.0f} MiB reserved" if cuda else "n/a (CPU)"
(out / "gpu-predict.md").write_text(
    f"# predict on a generated {size}x{size} raster\n\n"
    f"| pipeline MPix/s | bare forward MPix/s | ratio | windows | peak GPU memory | peak RSS MB |\n|---|---|---|---|---|---|\n"
    f"| {result['pipeline_mpix_s']:.2f} | {result['bare_forward_mpix_s']:.2f} | {result['ratio_pipeline_vs_bare']:.2f} | "
    f"{len(windows)} | {gpu} | {rss:.0f} |\n\nUNetFormer (random weights), tile {tile}, overlap {overlap}, batch {batch}, "
    f"{device}; bare forward = model(x) alone, same precision and batch, scaled to all windows.\n")
print(json.dumps(result))
EOF

step "summary"
"$PY" - <<'EOF'
import json, os
from pathlib import Path

out = Path(os.environ["GPU_CHECK_OUT"])
env = json.loads((out / "gpu-env.json").read_text())
parts = [f"# GPU check: {env['device']}\n",
         f"torch {env['torch']} (CUDA {env['cuda']}), commit {env.get('git_commit', '?')}"
         + (", DRY RUN (CPU, tiny sizes: not a measurement)" if env["dry_run"] else "") + ".\n"]
speed = json.loads((out / "gpu-model_speed.json").read_text())
paper = speed["paper_fps_512_rtx3090"]
parts.append("| variant (512x512) | batch | images/s | x paper's 322.4 FPS (RTX 3090) |\n|---|---|---|---|\n" + "".join(
    f"| {r['variant']} | {r['batch']} | {r['images_per_s']:.1f} | {r['images_per_s'] / paper:.2f} |\n"
    for r in speed["results"] if "error" not in r and r["size"] == 512))
for name in ("model_speed", "train", "regularizer_overhead", "predict"):
    parts.append((out / f"gpu-{name}.md").read_text().replace("\n# ", "\n## ").replace("# ", "## ", 1))
(out / "gpu-summary.md").write_text("\n".join(parts))
EOF
STEP="done"
echo "gpu_check: all steps passed in $((SECONDS - START))s; results in $OUT:"
ls "$OUT"/gpu-*
