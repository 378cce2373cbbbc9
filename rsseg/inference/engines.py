"""Inference engines: a normalised batch in, class probabilities out, test-time augmentation included.

Every engine is called the same way, ``engine(batch, tta)``: ``batch`` is normalised float32
[B, C, H, W] (H, W multiples of 32), the result is softmax probabilities [B, K, H, W] float32 (a
numpy array). :class:`Engine` holds the one TTA algorithm; an engine supplies only array
primitives (forward to logits, dihedral transform, bilinear resize, softmax) in its own library:

- :class:`TorchEngine`: the PyTorch model on CPU or CUDA (bf16 autocast on CUDA).
- :class:`OnnxEngine`: the exported ONNX graph (an ``rsseg export`` file or :func:`cached_onnx`) in ONNX
  Runtime on the CPU; TTA in numpy (:class:`NumpyEngine`).
- :class:`OpenVinoEngine`: the same graph in OpenVINO's CPU plugin.

This module imports no torch, onnxruntime or openvino at import time, so the ONNX path loads no
PyTorch model.

TTA averages softmax probabilities over flips (``flip``), the 8 dihedral transforms (``d4``) or
input scales :data:`MS_SCALES` (``ms``, logits resized back bilinearly before the softmax).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rsseg.checkpoint import (
    ModelMeta,
    import_runtime,
    meta_from_props,
    onnx_meta,
    onnx_session,
    require_model_file,
    runtime_error_line,
    unreadable_model,
)
from rsseg.errors import BackendUnavailableError, CheckpointNotFoundError
from rsseg.extras import CHECKPOINT_INSTEAD, needs_train
from rsseg.inference.windows import padded_size
from rsseg.io import cache_dir, file_sha256

if TYPE_CHECKING:
    import torch
    from torch import nn

#: multi-scale TTA factors (the usual 0.75/1/1.25 of segmentation test-time scaling)
MS_SCALES = (0.75, 1.0, 1.25)


def physical_cores() -> int:
    """CPU cores this process may use, counting physical cores only (SMT siblings share the FPUs)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or usable
    except ImportError:
        physical = usable
    return max(1, min(usable, physical))


def _views(tta: str) -> list[tuple[int, bool]]:
    """(quarter turns, flip) of each TTA view."""
    if tta == "flip":
        return [(0, False), (0, True)]
    return [(k, f) for k in range(4) for f in (False, True)]


class Engine:
    """Normalised batch [B, C, H, W] float32 -> probabilities [B, K, H, W] float32, TTA included.

    Subclasses implement the primitives on their native arrays; ``device`` names where they run.
    """

    name: str = ""
    device: Any = "cpu"

    def __call__(self, batch: np.ndarray, tta: str = "none") -> np.ndarray:
        with self._context():
            x = self._native(batch)
            if tta == "none":
                total = self._softmax(self._logits(x))
                n = 1
            elif tta in ("flip", "d4"):
                total, n = None, 0
                for k, flip in _views(tta):
                    p = self._d4(self._softmax(self._logits(self._d4(x, k, flip))), -k, flip, inverse=True)
                    total, n = (p if total is None else total + p), n + 1
            elif tta == "ms":
                h, w = x.shape[-2:]
                total, n = None, 0
                for s in MS_SCALES:
                    size = (max(32, padded_size(round(h * s))), max(32, padded_size(round(w * s))))
                    xs = x if size == (h, w) else self._resize(x, size)
                    logits = self._logits(xs)
                    if size != (h, w):
                        logits = self._resize(logits, (h, w))
                    p = self._softmax(logits)
                    total, n = (p if total is None else total + p), n + 1
            else:
                raise ValueError(f"unknown TTA mode {tta!r}")
            return self._numpy(total / n if n > 1 else total)

    # -- primitives -------------------------------------------------------------------------
    def _context(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def _native(self, batch: np.ndarray) -> Any:
        raise NotImplementedError

    def _logits(self, x: Any) -> Any:
        raise NotImplementedError

    def _softmax(self, logits: Any) -> Any:
        raise NotImplementedError

    def _d4(self, x: Any, k: int, flip: bool, inverse: bool = False) -> Any:
        raise NotImplementedError

    def _resize(self, x: Any, size: tuple[int, int]) -> Any:
        raise NotImplementedError

    def _numpy(self, probs: Any) -> np.ndarray:
        raise NotImplementedError


def _logits_of(out: object) -> torch.Tensor:
    """Model outputs may be a tensor, a tuple (logits first) or a dict with 'logits'."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return out[0]
    if isinstance(out, dict) and "logits" in out:
        return out["logits"]
    raise TypeError(f"model returned {type(out).__name__}; expected logits [B,K,H,W]")


class TorchEngine(Engine):
    """A PyTorch model in eval mode under ``torch.inference_mode``; bf16 autocast on CUDA.

    On the CPU the intra-op thread pool is sized to the physical cores (:func:`physical_cores`).
    channels_last and CPU bf16 autocast were measured and are not used (docs/results_engines.md).
    """

    name = "torch"

    def __init__(self, model: nn.Module, device: str | torch.device) -> None:
        import torch

        self.device = device = torch.device(device)
        self.model = model.to(device).eval()
        if device.type == "cpu" and torch.get_num_threads() != physical_cores():
            torch.set_num_threads(physical_cores())

    def _context(self) -> contextlib.AbstractContextManager:
        import torch

        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self.device.type == "cuda":
            stack.enter_context(torch.autocast("cuda", dtype=torch.bfloat16))
        return stack

    def _native(self, batch: np.ndarray) -> torch.Tensor:
        import torch

        x = torch.from_numpy(batch)
        if self.device.type == "cuda":
            x = x.pin_memory()
        return x.to(self.device, non_blocking=True)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return _logits_of(self.model(x)).float()

    def _softmax(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().softmax(dim=1)

    def _d4(self, x: torch.Tensor, k: int, flip: bool, inverse: bool = False) -> torch.Tensor:
        import torch

        if inverse and flip:
            x = torch.flip(x, dims=(3,))
        x = torch.rot90(x, k, dims=(2, 3))
        return torch.flip(x, dims=(3,)) if flip and not inverse else x

    def _resize(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        import torch.nn.functional as F

        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def _numpy(self, probs: torch.Tensor) -> np.ndarray:
        return probs.float().cpu().numpy()


def _bilinear_axis(x: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Resize one axis of ``x`` to ``size`` by linear interpolation with half-pixel centres and edge
    clamping: ``torch.nn.functional.interpolate(mode='bilinear', align_corners=False)`` without
    antialiasing, one axis at a time (it is separable)."""
    n = x.shape[axis]
    # float32 index arithmetic, as torch's CPU kernel does: float64 would move samples by ~1e-5 px
    scale = np.float32(n) / np.float32(size)
    src = np.maximum(scale * (np.arange(size, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    i0 = src.astype(np.int64)
    i1 = np.minimum(i0 + 1, n - 1)
    shape = [1] * x.ndim
    shape[axis] = size
    w1 = np.clip(src - i0.astype(np.float32), 0, 1).reshape(shape)
    return np.take(x, i0, axis=axis) * (1 - w1) + np.take(x, i1, axis=axis) * w1


@functools.cache
def _arena_allocator() -> None:
    """Register, once per process, a CPU arena that grows by exactly the requested size (ONNX
    Runtime's default doubles each extension, holding up to twice the peak); sessions opt in."""
    import onnxruntime as ort

    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    # OrtArenaCfg(max_mem: 0 = unlimited, arena_extend_strategy: 1 = kSameAsRequested, defaults)
    ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 1, -1, -1))


class NumpyEngine(Engine):
    """An engine that runs an exported rsseg ONNX model (input ``image``, output ``logits``) on the
    CPU, TTA in numpy; subclasses supply the runtime (:meth:`_logits`) and :attr:`meta`, the model
    metadata stored in the file (so an exported model needs no checkpoint)."""

    device = "cpu"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def meta(self) -> ModelMeta:
        raise NotImplementedError

    def _native(self, batch: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(batch, dtype=np.float32)

    def _softmax(self, logits: np.ndarray) -> np.ndarray:
        # in place: the logits are this engine's own array, and a window's [B, K, H, W] float32
        # copies are tens of MB each
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        return logits

    def _d4(self, x: np.ndarray, k: int, flip: bool, inverse: bool = False) -> np.ndarray:
        if inverse and flip:
            x = np.flip(x, axis=3)
        x = np.rot90(x, k, axes=(2, 3))
        return np.flip(x, axis=3) if flip and not inverse else x

    def _resize(self, x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return _bilinear_axis(_bilinear_axis(x, size[0], 2), size[1], 3)

    def _numpy(self, probs: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(probs, dtype=np.float32)


class OnnxEngine(NumpyEngine):
    """An exported rsseg ONNX model in ONNX Runtime on the CPU.

    The session runs on :func:`physical_cores` intra-op threads with all graph optimisations and
    ONNX Runtime's memory arena, grown by exactly what is requested (:func:`_arena_allocator`).
    ``meta``: :func:`rsseg.checkpoint.onnx_meta`. A file ONNX Runtime cannot load is one line
    (:func:`rsseg.checkpoint.onnx_session`).
    """

    name = "onnx"
    #: False: every tensor from malloc instead (107-129 MB more peak RSS in the predict pipeline,
    #: where freed activations stay in the threads' malloc arenas; docs/results_engines.md)
    arena = True

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__(path)
        ort = import_runtime("onnx", path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or physical_cores()
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.enable_mem_pattern = False  # per-shape buffer plans: ~120 MB more peak RSS, no steady speed gain here
        opts.enable_cpu_mem_arena = self.arena
        if self.arena:
            _arena_allocator()
            opts.add_session_config_entry("session.use_env_allocators", "1")
        self.session = onnx_session(path, opts)
        self._input = self.session.get_inputs()[0].name

    @property
    def meta(self) -> ModelMeta:
        return onnx_meta(self.session, self.path)

    def _logits(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: np.ascontiguousarray(x)})[0]


class OpenVinoEngine(NumpyEngine):
    """An exported rsseg ONNX model in OpenVINO's CPU plugin (the ``openvino`` extra).

    Compiled once with dynamic height and width, float32 (on a CPU with native bf16 OpenVINO would
    otherwise run in bf16 and change predictions), the latency hint and :func:`physical_cores`
    threads. ``meta`` comes from the file's ``metadata_props``, which OpenVINO keeps in the model's
    ``rt_info['framework']``.
    """

    name = "openvino"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__(path)
        ov = import_runtime("openvino", path)
        require_model_file(path)
        core = ov.Core()
        try:
            self.graph = core.read_model(str(path))
        except RuntimeError as exc:  # OpenVINO's frontends raise RuntimeError for any unreadable file
            raise unreadable_model(path, exc) from None
        config = {"INFERENCE_NUM_THREADS": threads or physical_cores(), "INFERENCE_PRECISION_HINT": "f32",
                  "PERFORMANCE_HINT": "LATENCY"}
        try:
            self.compiled = core.compile_model(self.graph, "CPU", config)
        except RuntimeError as exc:  # an operator this OpenVINO cannot run on this CPU
            raise BackendUnavailableError(f"OpenVINO cannot compile {self.path.name} for this CPU "
                                          f"({runtime_error_line(exc)}); run it with --engine onnx") from None
        self._request = self.compiled.create_infer_request()

    @property
    def meta(self) -> ModelMeta:
        framework = self.graph.get_rt_info()["framework"] if self.graph.has_rt_info("framework") else {}
        props = {key: self.graph.get_rt_info(["framework", key]).astype(str) for key in framework}
        return meta_from_props(props, self.path)

    def _logits(self, x: np.ndarray) -> np.ndarray:
        # share_outputs=False: the result is this engine's own array (the softmax runs in place)
        return self._request.infer({0: np.ascontiguousarray(x)}, share_outputs=False)[0]


#: the engines that run an exported ONNX file, by name
FILE_ENGINES: dict[str, type[NumpyEngine]] = {"onnx": OnnxEngine, "openvino": OpenVinoEngine}


#: bump when the exported file changes for the same checkpoint (invalidates cached exports); 2: its
#: metadata gained the STAC MLM view and the checkpoint's sha256
EXPORT_VERSION = 2
#: example size the cached export is traced at (height and width stay dynamic)
CACHE_EXPORT_SIZE = 512


def _export_key(checkpoint: Path, size: int, opset: int | None) -> str:
    """sha256 over the checkpoint's bytes and the export settings (size, opset, exporter versions)."""
    settings = {"checkpoint": file_sha256(checkpoint), "size": size, "opset": opset, "dynamic": True, "export": EXPORT_VERSION,
                "torch": importlib.metadata.version("torch"), "onnx": importlib.metadata.version("onnx")}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]


def onnx_cache_paths(checkpoint: str | Path, size: int = CACHE_EXPORT_SIZE, opset: int | None = None) -> list[Path]:
    """Where the cached export of ``checkpoint`` may live, in lookup order: beside the checkpoint
    (``<name>.<key>.onnx``), then in :func:`rsseg.io.cache_dir` ``/onnx/<key>.onnx``."""
    checkpoint = Path(checkpoint)
    key = _export_key(checkpoint, size, opset)
    return [checkpoint.with_name(f"{checkpoint.name}.{key}.onnx"), cache_dir() / "onnx" / f"{key}.onnx"]


def is_cached_export(path: str | Path) -> bool:
    """Whether ``path`` is a cached export beside its checkpoint (:func:`onnx_cache_paths`), not a
    model file of its own: lists of models leave it out."""
    return re.search(r"\.[0-9a-f]{20}\.onnx$", str(path)) is not None


def cached_onnx(checkpoint: str | Path, size: int = CACHE_EXPORT_SIZE, opset: int | None = None, *,
                on_export: Callable[[Path], None] | None = None) -> Path:
    """The ONNX export of ``checkpoint`` (dynamic batch, height and width; metadata in
    ``metadata_props``), exported on first use and cached, keyed by the checkpoint's hash and the
    export settings. Beside the checkpoint when that folder is writable, else in :func:`rsseg.io.cache_dir`.

    A cache hit reads only the checkpoint's bytes (for the hash): no model is built.
    ``on_export(target)`` is called before an export starts (it takes a minute or more on a CPU).
    """

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointNotFoundError(f"checkpoint not found: {checkpoint} (train one with `rsseg train`)")
    # the cache key names the exporter's versions, and the export runs PyTorch
    with needs_train(f"the PyTorch checkpoint {checkpoint}", CHECKPOINT_INSTEAD):
        candidates = onnx_cache_paths(checkpoint, size, opset)
        for path in candidates:
            if path.is_file():
                return path
        from rsseg.checkpoint import export_checkpoint_onnx

        beside, fallback = candidates
        target = beside if os.access(beside.parent, os.W_OK) else fallback
        target.parent.mkdir(parents=True, exist_ok=True)
        if on_export is not None:
            on_export(target)
        return export_checkpoint_onnx(checkpoint, target, size)[0]
