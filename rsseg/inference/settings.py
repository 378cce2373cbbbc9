"""The one resolution of prediction settings and the one device resolver.

Order, latest wins: the checkpoint's ``inference`` config section (its schema and defaults are
:class:`rsseg.config.InferenceConfig`) -> the CPU/GPU rule (:data:`CPU_MAX_BATCH`) -> the
caller's overrides (CLI flags, viewer widgets). Every caller (``rsseg predict``, ``rsseg
evaluate``, the viewer, the demo) goes through :func:`resolve_settings`, via
:meth:`rsseg.inference.Predictor.from_checkpoint` / ``from_model``.
"""

from __future__ import annotations

import ctypes
import importlib.util
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from rsseg.checkpoint import ModelMeta
from rsseg.config import ENGINES, TTA_MODES
from rsseg.errors import BackendUnavailableError, ConfigError
from rsseg.extras import RUNTIME_INSTALL, RUNTIME_MODULE, needs_train

if TYPE_CHECKING:
    import torch

#: most windows per forward on a CPU, per engine, unless the caller sets a batch. ONNX Runtime ran
#: one 1024 window at a time faster than two and with ~130 MB less peak RSS on a 32768-wide raster
#: (bench/results/predict_engines*.md); torch keeps 2
CPU_MAX_BATCH = {"torch": 2, "onnx": 1, "openvino": 1}

__all__ = ["CPU_MAX_BATCH", "ENGINES", "PredictSettings", "TTA_MODES", "check_settings", "cuda_available", "device_type",
           "engine_installed", "fastest_file_engine", "onnx_model_settings", "resolve_device", "resolve_engine", "resolve_settings", "resolve_tiling"]


def _nvidia_driver() -> bool:
    """Whether the NVIDIA driver library loads (no driver, no CUDA device for any framework)."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return True
    return False


def cuda_available() -> bool:
    """Whether PyTorch can use a CUDA GPU. Without an NVIDIA driver the answer is no without
    importing torch: a CUDA build of torch costs ~700 MB of RSS that the ONNX engine never needs.
    Without PyTorch installed (the base install) the answer is no."""
    if "torch" not in sys.modules and (not _nvidia_driver() or importlib.util.find_spec("torch") is None):
        return False
    import torch

    return torch.cuda.is_available()


def device_type(device: str | torch.device) -> str:
    """``cpu``, ``cuda``, ... of a device or its name (``cuda:1`` -> ``cuda``)."""
    return str(device).split(":")[0]


def resolve_device(device: str | torch.device = "auto") -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; an explicit CUDA request without CUDA is an
    error. Returns the device's name as torch spells it (``cpu``, ``cuda``, ``cuda:1``)."""
    name = str(device)
    if name == "auto":
        return "cuda" if cuda_available() else "cpu"
    if name == "cpu":
        return name
    with needs_train("running on CUDA", "; or use --device cpu"):
        import torch

    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError("device 'cuda' requested but no CUDA GPU is available; use --device cpu or auto")
    return str(dev)


#: the CPU engines that run an exported ONNX file, fastest first (their packages: rsseg.extras.RUNTIME_MODULE). Measured
#: side by side on one UNetFormer window, same graph, outputs equal to 1e-8 (docs/performance.md,
#: bench/model_speed.py): OpenVINO took 0.87-0.92x of ONNX Runtime's time at 512 and 1024 px
CPU_FILE_ENGINES = ("openvino", "onnx")


def engine_installed(engine: str) -> bool:
    """Whether the package of a CPU file engine (:data:`CPU_FILE_ENGINES`) is installed, without importing it."""
    return importlib.util.find_spec(RUNTIME_MODULE[engine]) is not None


def fastest_file_engine() -> str | None:
    """The fastest installed engine of :data:`CPU_FILE_ENGINES`, None when neither is installed."""
    return next((e for e in CPU_FILE_ENGINES if engine_installed(e)), None)


def resolve_engine(engine: str, device: str | torch.device) -> str:
    """``auto`` -> on the CPU the fastest installed of :data:`CPU_FILE_ENGINES` (OpenVINO, then ONNX
    Runtime), else ``torch`` (always on CUDA).

    ``onnx`` and ``openvino`` run on the CPU only: asking for one with a CUDA device, or without its
    package, is an error.
    """
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "auto":
        return (fastest_file_engine() if device_type(device) == "cpu" else None) or "torch"
    if engine in CPU_FILE_ENGINES:
        if device_type(device) != "cpu":
            raise ConfigError(f"the {engine} engine runs on the CPU, not {device_type(device)}; use --device cpu or --engine torch")
        if not engine_installed(engine):
            raise BackendUnavailableError(f"the {engine} engine needs {RUNTIME_MODULE[engine]}: "
                                          f"{RUNTIME_INSTALL[engine]} (or use --engine auto)")
    return engine


def onnx_model_settings(path: str | Path, settings: PredictSettings) -> PredictSettings:
    """The user's ``settings`` (CLI flags, the viewer's widgets) for an exported ``.onnx`` model, which
    ONNX Runtime or OpenVINO runs on the CPU (``auto``: the fastest installed, :func:`fastest_file_engine`):
    a request for the torch engine or a CUDA device, which need the checkpoint, is refused in one line
    naming it, and so is a missing runtime. (The library's :meth:`~rsseg.inference.Predictor.from_onnx`
    runs such a file in a CPU engine whatever the settings say.)"""
    name = Path(path).name
    if settings.engine == "torch":
        raise ConfigError(f"{name} is an ONNX model and runs in ONNX Runtime or OpenVINO, not with the torch engine; use "
                          "--engine auto, onnx or openvino, or give the .ckpt it was exported from to run it with torch")
    if device_type(settings.device) not in ("auto", "cpu"):
        raise ConfigError(f"{name} is an ONNX model and runs on the CPU, not {settings.device}; use "
                          "--device cpu, or give the .ckpt it was exported from to run it on the GPU")
    engine = (fastest_file_engine() or "onnx") if settings.engine == "auto" else settings.engine
    resolve_engine(engine, "cpu")  # a missing runtime: one line naming what to install
    return replace(settings, engine=engine, device="cpu")


@dataclass(frozen=True)
class PredictSettings:
    """Sliding-window settings, the one carrier from the CLI to a :class:`~rsseg.inference.Predictor`
    and to Dask workers.

    As requested: ``None`` leaves a value to the checkpoint's config and the
    CPU/GPU rule, ``device``/``engine`` may be ``auto``. As resolved (:func:`resolve_settings`,
    :attr:`resolved`): nothing is ``None``, the device is named as :func:`resolve_device` names it and
    the engine is ``torch``, ``onnx`` or ``openvino`` (:func:`resolve_engine`); a Predictor keeps only these.
    """

    tile: int | None = None
    overlap: int | None = None
    batch: int | None = None
    tta: str | None = None
    device: str = "auto"
    engine: str = "torch"

    @property
    def resolved(self) -> bool:
        return None not in (self.tile, self.overlap, self.batch, self.tta) and self.device != "auto" \
            and self.engine in ENGINES[1:]

    def resolve(self, meta: ModelMeta) -> PredictSettings:
        """These settings for ``meta``'s checkpoint (:func:`resolve_settings`)."""
        return resolve_settings(meta, device=self.device, tile=self.tile, overlap=self.overlap, batch=self.batch,
                                tta=self.tta, engine=self.engine)

    def summary(self) -> str:
        """One line describing the settings (for the CLI and logs)."""
        return (f"engine {self.engine}, device {self.device}, tile {self.tile}/{self.overlap}, "
                f"batch {self.batch}, tta {self.tta}")


def resolve_tiling(meta: ModelMeta, tile: int | None = None, overlap: int | None = None,
                   tta: str | None = None) -> tuple[int, int, str]:
    """Tile, overlap and TTA for ``meta``'s checkpoint: its config, then the given overrides.

    Needs neither torch nor a device, so a Dask client plans its row strips with it. A tile given
    without an overlap keeps the configured overlap when it fits, else a quarter of the tile, so
    ``--tile 128`` alone never fails on a default overlap of 256.
    """
    inf = meta.inference_config()
    tile = inf.tile if tile is None else tile
    if overlap is None:
        overlap = inf.overlap if inf.overlap < tile else tile // 4
    return tile, overlap, inf.tta if tta is None else tta


def resolve_settings(meta: ModelMeta, *, device: str | torch.device = "auto", tile: int | None = None,
                     overlap: int | None = None, batch: int | None = None, tta: str | None = None,
                     engine: str = "torch") -> PredictSettings:
    """Settings for ``meta``'s checkpoint: its config, then the CPU rule, then the given overrides.

    Tile, overlap and TTA as :func:`resolve_tiling` resolves them. Without an explicit batch, CPUs
    run at most :data:`CPU_MAX_BATCH` windows at a time (a batch of 8 large tiles costs GBs of
    activations on a CPU and buys no throughput).
    """
    dev = resolve_device(device)
    engine = resolve_engine(engine, dev)
    tile, overlap, tta = resolve_tiling(meta, tile, overlap, tta)
    if batch is None:
        inf = meta.inference_config()
        batch = inf.batch if device_type(dev) == "cuda" else min(inf.batch, CPU_MAX_BATCH[engine])
    return PredictSettings(tile=tile, overlap=overlap, batch=batch, tta=tta, device=dev, engine=engine)


def check_settings(s: PredictSettings) -> PredictSettings:
    """Refuse settings that cannot run: tile < 1, overlap outside [0, tile), batch < 1, unknown TTA."""
    from rsseg.inference.windows import check_tiling

    check_tiling(s.tile, s.overlap)
    if s.batch < 1:
        raise ConfigError(f"batch must be at least 1 (got {s.batch}); use e.g. --window-batch 2")
    if s.tta not in TTA_MODES:
        raise ConfigError(f"unknown TTA mode {s.tta!r}; choose one of {', '.join(TTA_MODES)}")
    return s
