"""UNetFormer forward speed: torch eager, tuned torch and ONNX Runtime, side by side in one run.

Every variant runs on the same model (resnet18, random weights, eval) and the same input. A
variant is ``eager`` (float32, ``torch.no_grad``, default threads), ``onnx`` (the graph of
``rsseg.models.export.export_onnx``, dynamic H/W, in ONNX Runtime's CPU or CUDA provider with its
default session options: memory arena and memory pattern on), ``onnx_engine`` (the same graph in the
session ``rsseg predict`` runs: :class:`rsseg.inference.engines.OnnxEngine`, CPU, exact-size arena),
``openvino`` / ``openvino_static`` (the same graph in OpenVINO's CPU plugin, float32, latency hint; compiled
once with dynamic H/W, or once per input shape), ``openvino_engine`` (the same graph in the engine
``rsseg predict --engine openvino`` runs: :class:`rsseg.inference.engines.OpenVinoEngine`) or a
'+'-joined set of tunings:

- ``inference_mode``: ``torch.inference_mode`` instead of ``no_grad``;
- ``channels_last``: model and input in NHWC memory format (oneDNN / cuDNN prefer it);
- ``threads``: intra-op threads = physical cores (CPU only; the others use torch's default or
  ``--threads``, ONNX Runtime the same number);
- ``bf16``: bfloat16 autocast (on CPU only offered when the CPU has native bf16:
  ``avx512_bf16`` or ``amx_bf16`` in /proc/cpuinfo);
- ``compile``: ``torch.compile`` (default mode, static shapes; compile time is reported apart).

``tuned`` is every tuning available on the device except ``compile``. Repeats are interleaved: each repeat
times every variant once in a freshly shuffled order, so all see the same machine load; reported
are the median of the per-repeat ratios (variant time / eager time of the same repeat) with its
range, images/s from the median time, and the largest logit difference and argmax agreement
with eager. For reference, the UNetFormer paper (Wang et al., ISPRS JPRS 2022) reports
322.4 FPS at 512x512 on an RTX 3090.

    python bench/model_speed.py --device cpu --out bench/results          # -> model_speed_cpu.{json,md}
    python bench/model_speed.py --device cuda --sizes 512 --batches 1 8   # -> model_speed_cuda.{json,md}
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import torch

from rsseg.config import ModelConfig
from rsseg.io import atomic_path, write_json
from rsseg.models import build_model

NUM_CLASSES = 6
PAPER_FPS_512 = 322.4  # UNetFormer paper, 512x512, RTX 3090
TUNINGS = ("inference_mode", "channels_last", "threads", "bf16", "compile")
#: the exported graph in OpenVINO on the CPU, float32 (a bf16 CPU would otherwise run it in bf16):
#: ``openvino`` compiles it once with dynamic H/W, ``openvino_static`` once per input shape,
#: ``openvino_engine`` is what ``rsseg predict --engine openvino`` runs (:class:`rsseg.inference.engines.OpenVinoEngine`)
OPENVINO_VARIANTS = ("openvino", "openvino_static", "openvino_engine")


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def physical_cores() -> int:
    """Distinct (physical id, core id) pairs of /proc/cpuinfo; os.cpu_count() where it lacks them."""
    try:
        blocks = Path("/proc/cpuinfo").read_text().strip().split("\n\n")
    except OSError:
        return os.cpu_count() or 1
    cores = set()
    for block in blocks:
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if "core id" in fields:
            cores.add((fields.get("physical id", "0"), fields["core id"]))
    return len(cores) or os.cpu_count() or 1


def native_bf16() -> bool:
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def default_variants(device: torch.device) -> list[str]:
    if device.type == "cuda":
        return ["eager", "inference_mode+bf16+channels_last", "inference_mode+bf16+channels_last+compile"]
    tunings = ["inference_mode", "channels_last", "threads"] + (["bf16"] if native_bf16() else [])
    return ["eager", *tunings, "tuned", "onnx", "onnx_engine"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Runner:
    """One variant: ``run(x)`` returns float32 logits on the host device of ``x``."""

    def __init__(self, name: str, model: torch.nn.Module, device: torch.device, workdir: Path) -> None:
        self.name, self.device = name, device
        self.compile_s: float | None = None
        if name in ("onnx", "onnx_engine"):
            self.run = self._onnx(model, device, workdir, rsseg_session=name == "onnx_engine")
            return
        if name == "openvino_engine":
            self.run = self._engine(model, workdir)
            return
        if name in OPENVINO_VARIANTS:
            self.run = self._openvino(model, workdir, static=name == "openvino_static")
            return
        flags = set(name.split("+")) - {"eager"}
        if name == "tuned":
            flags = {"inference_mode", "channels_last", "bf16"} | ({"threads"} if device.type == "cpu" else set())
            if device.type == "cpu" and not native_bf16():
                flags.discard("bf16")
        unknown = flags - set(TUNINGS)
        if unknown:
            raise SystemExit(f"unknown tuning(s) {sorted(unknown)} in variant {name!r}; choose from {TUNINGS}, eager, tuned, onnx, onnx_engine, {', '.join(OPENVINO_VARIANTS)}")
        self.flags = flags
        self.fmt = torch.channels_last if "channels_last" in flags else torch.contiguous_format
        # a copy per variant: .to(memory_format) converts parameters in place
        net = build_model(ModelConfig(), num_classes=NUM_CLASSES, in_channels=3).to(device).eval()
        net.load_state_dict(model.state_dict())
        net = net.to(memory_format=self.fmt)
        self.net: Callable = torch.compile(net) if "compile" in flags else net
        self.run = self._torch

    def _torch(self, x: torch.Tensor) -> torch.Tensor:
        threads = torch.get_num_threads()
        with ExitStack() as stack:
            stack.enter_context(torch.inference_mode() if "inference_mode" in self.flags else torch.no_grad())
            if "bf16" in self.flags:
                stack.enter_context(torch.autocast(self.device.type, dtype=torch.bfloat16))
            if "threads" in self.flags:
                torch.set_num_threads(physical_cores())
            try:
                out = self.net(x.contiguous(memory_format=self.fmt))
            finally:
                torch.set_num_threads(threads)
        return out.float()

    def _export(self, model: torch.nn.Module, workdir: Path) -> Path:
        from rsseg.models.export import export_onnx

        t0 = time.perf_counter()
        path = export_onnx(model, workdir / f"{self.name}.onnx", in_channels=3, height=512, width=512, dynamic=True)
        self.compile_s = time.perf_counter() - t0  # export time, reported like compile time
        return path

    def _openvino(self, model: torch.nn.Module, workdir: Path, static: bool) -> Callable:
        import openvino as ov

        core = ov.Core()
        graph = core.read_model(str(self._export(model, workdir)))
        # the same thread budget as eager (--threads); f32 so outputs are comparable to the others
        config = {"INFERENCE_NUM_THREADS": torch.get_num_threads(), "INFERENCE_PRECISION_HINT": "f32",
                  "PERFORMANCE_HINT": "LATENCY"}
        compiled: dict[tuple, object] = {}

        def run(x: torch.Tensor) -> torch.Tensor:
            key = tuple(x.shape) if static else ()
            if key not in compiled:
                g = graph.clone()
                if static:
                    g.reshape({g.inputs[0]: ov.PartialShape(list(x.shape))})
                compiled[key] = core.compile_model(g, "CPU", config)
            out = compiled[key]({0: x.cpu().numpy()})[0]
            return torch.from_numpy(out).to(x.device)

        return run

    def _engine(self, model: torch.nn.Module, workdir: Path) -> Callable:
        from rsseg.inference.engines import OpenVinoEngine

        engine = OpenVinoEngine(self._export(model, workdir), threads=torch.get_num_threads())

        def run(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(engine._logits(x.cpu().numpy())).to(x.device)

        return run

    def _onnx(self, model: torch.nn.Module, device: torch.device, workdir: Path, rsseg_session: bool) -> Callable:
        import onnxruntime as ort

        from rsseg.inference.engines import OnnxEngine

        path = self._export(model, workdir)
        threads = torch.get_num_threads()  # the same budget as eager (--threads)
        if rsseg_session:
            session = OnnxEngine(path, threads=threads).session
        else:
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.intra_op_num_threads = threads
            providers = ["CUDAExecutionProvider"] if device.type == "cuda" else ["CPUExecutionProvider"]
            session = ort.InferenceSession(str(path), opts, providers=providers)

        def run(x: torch.Tensor) -> torch.Tensor:
            (logits,) = session.run(["logits"], {"image": x.cpu().numpy()})
            return torch.from_numpy(logits).to(x.device)

        return run


def measure(runners: list[Runner], device: torch.device, size: int, batch: int, repeats: int, iters: int,
            warmup: int, seed: int) -> list[dict]:
    """Rows for one input shape: interleaved timings of every runner, ratios vs the first (eager)."""
    torch.manual_seed(seed)
    x = torch.randn(batch, 3, size, size, device=device)
    reference, first_s, diffs, failed = None, {}, {}, []
    for r in list(runners):
        _sync(device)
        t0 = time.perf_counter()
        try:
            out = r.run(x)  # first call: compile / kernel selection / ORT arena
        except Exception as exc:  # noqa: BLE001 - a compiler missing on this machine is a finding, not a crash
            if "compile" not in r.name:
                raise
            print(f"WARNING: variant {r.name} failed and is left out: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed.append({"variant": r.name, "size": size, "batch": batch, "error": f"{type(exc).__name__}: {exc}"[:500]})
            runners.remove(r)
            continue
        _sync(device)
        first_s[r.name] = time.perf_counter() - t0
        for _ in range(warmup - 1):
            r.run(x)
        if reference is None:
            reference = out
        diffs[r.name] = ((out - reference).abs().max().item(), (out.argmax(1) == reference.argmax(1)).float().mean().item())
    times: dict[str, list[float]] = {r.name: [] for r in runners}
    order = list(runners)
    rng = random.Random(seed)
    for _ in range(repeats):
        rng.shuffle(order)
        for r in order:
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(iters):
                r.run(x)
            _sync(device)
            times[r.name].append((time.perf_counter() - t0) / iters)
    base = times[runners[0].name]
    rows = []
    for r in runners:
        ratios = [t / b for t, b in zip(times[r.name], base)]
        median_s = statistics.median(times[r.name])
        rows.append({
            "variant": r.name, "size": size, "batch": batch, "repeats": repeats, "iters": iters,
            "median_ms": 1000 * median_s, "images_per_s": batch / median_s,
            "ratio_vs_eager": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "first_call_s": first_s[r.name], "compile_or_export_s": r.compile_s,
            "max_abs_diff_vs_eager": diffs[r.name][0], "argmax_agreement_vs_eager": diffs[r.name][1],
            "times_s": times[r.name],
        })
    return rows + failed


def markdown(env: dict, rows: list[dict]) -> str:
    lines = [
        f"# UNetFormer forward speed ({env['device']})",
        "",
        f"torch {env['torch']}, onnxruntime {env['onnxruntime']}, openvino {env.get('openvino')}, {env['physical_cores']} physical cores "
        f"({env['torch_threads']} intra-op threads), native bf16: {env['native_bf16']}, "
        f"load average {env['load_average_start'][0]:.1f} -> {env['load_average_end'][0]:.1f}. "
        f"Paper: {PAPER_FPS_512} FPS at 512x512 on an RTX 3090. Ratios: variant time / eager time of the same "
        "interleaved repeat, median (min-max); < 1 is faster.",
        "",
        "| size | batch | variant | ms / batch | images / s | ratio vs eager (min-max) | max abs diff | argmax agree |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['size']} | {r['batch']} | {r['variant']} | failed: {r['error'][:120]} | | | | |")
            continue
        lines.append(
            f"| {r['size']} | {r['batch']} | {r['variant']} | {r['median_ms']:.1f} | {r['images_per_s']:.2f} | "
            f"{r['ratio_vs_eager']:.3f} ({r['ratio_min']:.3f}-{r['ratio_max']:.3f}) | "
            f"{r['max_abs_diff_vs_eager']:.1e} | {r['argmax_agreement_vs_eager']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument("--variants", nargs="+", help="default: eager, each tuning, tuned, onnx on CPU; "
                        "eager, bf16+channels_last with and without compile on CUDA")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="default 1 on CPU, 1 8 on CUDA")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 7 CPU, 10 CUDA)")
    parser.add_argument("--iters", type=int, default=None, help="forwards per timing (default 1 CPU, 20 CUDA)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls per variant (default 1 CPU, 5 CUDA)")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads of every variant but 'threads' (torch and ONNX Runtime; default torch's)")
    parser.add_argument("--name", default=None, help="output file stem (default model_speed_<device>)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device")
    device = torch.device("cuda" if args.device in ("cuda", "auto") and torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    batches = args.batches or ([1, 8] if cuda else [1])
    repeats = args.repeats or (10 if cuda else 7)
    iters = args.iters or (20 if cuda else 1)
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    variants = args.variants or default_variants(device)
    if variants[0] != "eager":
        variants = ["eager", *[v for v in variants if v != "eager"]]
    if cuda:
        torch.backends.cudnn.benchmark = True
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
        if {"onnx", "onnx_engine"} & set(variants):
            parser.error("variants onnx and onnx_engine need onnxruntime: pip install onnxruntime")
    try:
        import openvino

        ov_version = openvino.__version__
    except ImportError:
        ov_version = None
        if set(OPENVINO_VARIANTS) & set(variants):
            parser.error(f"variants {', '.join(OPENVINO_VARIANTS)} need OpenVINO: pip install openvino")

    env = {
        "device": torch.cuda.get_device_name(device) if cuda else (platform.processor() or platform.machine()),
        "device_type": device.type, "torch": torch.__version__, "onnxruntime": ort_version, "openvino": ov_version,
        "torch_threads": torch.get_num_threads(), "physical_cores": physical_cores(), "native_bf16": native_bf16(),
        "load_average_start": os.getloadavg(), "model": f"UNetFormer resnet18, {NUM_CLASSES} classes, random weights, eval",
        "variants": variants, "argv": sys.argv[1:],
    }
    torch.manual_seed(0)
    model = build_model(ModelConfig(), num_classes=NUM_CLASSES, in_channels=3).to(device).eval()
    rows = []
    with tempfile.TemporaryDirectory(prefix="rsseg-speed-") as tmp:
        runners = [Runner(v, model, device, Path(tmp)) for v in variants]
        for size in args.sizes:
            for batch in batches:
                for row in measure(runners, device, size, batch, repeats, iters, warmup, seed=size + batch):
                    rows.append(row)
                    if "error" in row:
                        continue
                    print(f"{size:>5}px batch {batch:>2} {row['variant']:>45}: {row['median_ms']:9.1f} ms "
                          f"{row['images_per_s']:8.2f} img/s  ratio {row['ratio_vs_eager']:.3f}", flush=True)
    env["load_average_end"] = os.getloadavg()
    if cuda:
        env["peak_mem_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    name = args.name or f"model_speed_{device.type}"
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{name}.json", {"env": env, "paper_fps_512_rtx3090": PAPER_FPS_512, "results": rows})
    with atomic_path(args.out / f"{name}.md") as tmp_md:
        tmp_md.write_text(markdown(env, rows))
    print(f"wrote {args.out / name}.json and {args.out / name}.md")


if __name__ == "__main__":
    main()
