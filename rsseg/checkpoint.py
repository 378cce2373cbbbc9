"""Self-describing model checkpoints.

A checkpoint is a Lightning checkpoint (``state_dict`` with the model's parameters under the
``model.`` prefix, optimizer state, epoch...) plus an ``rsseg`` entry holding :class:`ModelMeta`
as plain data. ``rsseg predict`` needs nothing but this file and a raster. Loading always uses
``torch.load(weights_only=True)``: checkpoints are untrusted files and must not run code.
"""

from __future__ import annotations

import codecs
import collections
import dataclasses
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rsseg.config import Config, InferenceConfig, parse_section
from rsseg.constants import IGNORE_INDEX
from rsseg.errors import CheckpointError, CheckpointNotFoundError
from rsseg.extras import CHECKPOINT_INSTEAD, needs_train
from rsseg.io import Staging, atomic_path, load_tensor_file, load_torch_file, write_error

if TYPE_CHECKING:  # torch loads lazily: reading metadata for the ONNX engine must not import it
    import torch
    from torch import nn

#: /2: the classifier reads the signed embedding projection; /1 weights load with the
#: same shapes but the classifier was trained on the feature before it, so they are refused
FORMAT = "rsseg-checkpoint/2"
META_KEY = "rsseg"
MODEL_PREFIX = "model."


@dataclass
class ModelMeta:
    """Everything needed to run a trained model on a raster.

    Pixels are normalised as ``(raw / scale - mean) / std`` per band, in ``bands`` order.
    """

    classes: list[str]
    colors: list[str]
    bands: list[str]
    mean: list[float]
    std: list[float]
    scale: float = 255.0
    ignore_index: int = IGNORE_INDEX
    patch_size: int = 512
    gsd: float | None = None
    #: full training config (``Config.to_dict()``), including the regularizer settings
    config: dict[str, Any] = field(default_factory=dict)
    #: training-set class frequencies (pixel and image-level), used for head/common/tail splits
    class_pixel_freq: list[float] | None = None
    class_region_freq: list[float] | None = None
    #: the training images' raster dtype and per-band [p1, p99] in raw units, the input contract
    #: every inference caller checks (:mod:`rsseg.inference.contract`); None in older checkpoints
    input_dtype: str | None = None
    input_range: list[list[float]] | None = None
    format: str = FORMAT

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return len(self.bands)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelMeta:
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict):
            raise CheckpointError(f"checkpoint metadata is a {type(data).__name__}, not a mapping; re-train or re-import the model")
        fmt = data.get("format", "rsseg-checkpoint/1")
        if fmt != FORMAT:
            raise CheckpointError(
                f"checkpoint format {fmt!r} is not {FORMAT!r}: it was written by an older rsseg whose classifier "
                "read the decoder feature directly, so its weights would predict wrongly here; re-train it "
                "(or re-import GeoSeg weights with `rsseg import`)")
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise CheckpointError(f"checkpoint metadata is incomplete ({exc}); re-train or re-import the model") from None

    def inference_config(self) -> InferenceConfig:
        """The checkpoint's ``inference`` section alone: needs no registry, so no torch."""
        return parse_section(InferenceConfig, self.config.get("inference"), "inference")

    def build_config(self) -> Config:
        from rsseg.runconfig import config_from_dict  # the registries load with it (torch)

        return config_from_dict(self.config)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The whole checkpoint dict, read weights-only; refused unless it carries rsseg metadata."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint not found: {path} (train one with `rsseg train`)")
    ckpt = load_torch_file(path, "checkpoint", "a .ckpt written by `rsseg train`")
    if not isinstance(ckpt, dict) or META_KEY not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not an rsseg checkpoint (no '{META_KEY}' metadata); train one with `rsseg train`")
    return ckpt


class _Tensor:
    """Stands for a tensor (or storage) while :func:`_read_plain_pickle` reads around it."""

    def __init__(self, *_args: Any) -> None:
        pass


class _PlainUnpickler(pickle.Unpickler):
    """Reads a ``torch.save`` pickle without torch: tensors become :class:`_Tensor` placeholders
    (their bytes stay unread), plain containers load as usual, and any other global is refused,
    as ``torch.load(weights_only=True)`` refuses it (no code from the file ever runs)."""

    _PLAIN = {("collections", "OrderedDict"): collections.OrderedDict, ("_codecs", "encode"): codecs.encode}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" or module.startswith("torch."):
            return _Tensor
        if (module, name) in self._PLAIN:
            return self._PLAIN[(module, name)]
        raise pickle.UnpicklingError(f"unsupported global {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        return None


def _read_plain_pickle(path: Path) -> Any:
    """The object of a ``torch.save`` zip file, tensors as placeholders; ``None`` when the file is
    not one (then torch reads it and reports any problem)."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if name is None:
                return None
            with archive.open(name) as f:
                return _PlainUnpickler(f).load()
    except Exception:  # noqa: BLE001 - not a zip, or an unexpected pickle: torch.load decides
        return None


def is_rsseg_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is an rsseg checkpoint (a ``torch.save`` zip of plain data with rsseg
    metadata), read without torch and without running code."""
    path = Path(path)
    ckpt = _read_plain_pickle(path) if path.is_file() else None
    return isinstance(ckpt, dict) and META_KEY in ckpt and "state_dict" in ckpt


def read_meta(path: str | Path) -> ModelMeta:
    """Read only the metadata of a checkpoint, without importing torch when the file is a
    ``torch.save`` zip of plain data (every rsseg checkpoint): a Dask client or the ONNX engine
    never pay torch's import (~700 MB with CUDA). Other files go through :func:`read_checkpoint`,
    which names their problem."""
    path = Path(path)
    ckpt = _read_plain_pickle(path) if path.is_file() else None
    if not isinstance(ckpt, dict) or META_KEY not in ckpt or "state_dict" not in ckpt:
        ckpt = read_checkpoint(path)
    return ModelMeta.from_dict(ckpt[META_KEY])


def model_state(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's tensors of a checkpoint, ``model.`` prefix removed (a training checkpoint also
    holds the loss terms' buffers, which no prediction reads)."""
    return {k[len(MODEL_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(MODEL_PREFIX)}


def check_weights(state: Mapping[str, torch.Tensor], path: str | Path, what: str = "checkpoint") -> None:
    """Refuse weights no model should run with: a NaN or infinite value in any floating-point
    tensor, or a BatchNorm running variance below zero. Such a model predicts one class with
    zero confidence everywhere, and says nothing."""
    import torch

    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            continue
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise CheckpointError(f"{what} {path} is corrupt: tensor {name} holds {bad:,} NaN or infinite value(s) of "
                                  f"{tensor.numel():,}; re-download or re-export the weights (a model with them "
                                  "predicts garbage)")
        if name.endswith("running_var") and bool((tensor < 0).any()):
            raise CheckpointError(f"{what} {path} is corrupt: BatchNorm statistics {name} hold a negative variance "
                                  f"({float(tensor.min()):g}); re-download or re-export the weights (a model with "
                                  "them predicts garbage)")


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelMeta]:
    """Load a checkpoint into a ready-to-run model in eval mode, with its metadata. Its weights
    are checked first (:func:`check_weights`)."""
    with needs_train(f"the PyTorch checkpoint {path}", CHECKPOINT_INSTEAD):
        from rsseg.models import build_model

    ckpt = read_checkpoint(path)
    meta = ModelMeta.from_dict(ckpt[META_KEY])
    state = model_state(ckpt)
    check_weights(state, path)
    cfg = meta.build_config()
    cfg.model.pretrained = False  # weights come from the checkpoint; never touch the network
    cfg.model.weights = None
    model = build_model(cfg.model, num_classes=meta.num_classes, in_channels=meta.in_channels)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # tensor shapes differ: e.g. weights for another class or band count
        sizes = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
        raise CheckpointError(
            f"checkpoint {path} weights do not match its metadata ({meta.num_classes} classes, {meta.in_channels} "
            f"bands, {cfg.model.encoder} encoder, {cfg.model.decode_channels}-channel decoder): "
            f"{sizes[0] if sizes else str(exc).splitlines()[0]}; the file was edited or assembled from two models"
        ) from None
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not match its model config "
            f"(missing {len(missing)} tensors e.g. {missing[:3]}, unexpected {len(unexpected)} e.g. {unexpected[:3]})"
        )
    return model.to(device).eval(), meta


def save_model(path: str | Path, model: nn.Module, meta: ModelMeta) -> Path:
    """Write a minimal checkpoint (weights + metadata) atomically; used by tests and exports."""
    import torch

    path = Path(path)
    state = {MODEL_PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, META_KEY: meta.to_dict()}, tmp)
    return path


def export_checkpoint_onnx(
    path: str | Path, out: str | Path, size: int = 512, dynamic: bool = True
) -> tuple[Path, ModelMeta]:
    """Export a checkpoint's inference graph to ONNX with its metadata in ``metadata_props``
    (``rsseg`` key, JSON): bands, normalisation, classes and colours travel with the model."""
    import json

    import onnx

    from rsseg.models import export_onnx

    model, meta = load_model(path)
    out = Path(out)
    with Staging() as stage:  # the target appears complete, with its metadata, or not at all
        tmp = stage.path(out)
        try:
            export_onnx(model, tmp, in_channels=meta.in_channels, height=size, width=size, dynamic=dynamic)
            proto = onnx.load(str(tmp))
            entry = proto.metadata_props.add()
            # the config travels too: it holds the inference defaults (tile, overlap, batch, TTA)
            entry.key, entry.value = META_KEY, json.dumps(meta.to_dict())
            onnx.save(proto, str(tmp))
            stage.commit()
        except Exception as exc:
            err = write_error(exc, "ONNX", out)
            if err is not None:
                raise err from None
            raise
    return out, meta


def file_summary(path: Path) -> dict[str, str]:
    """What a weights file or rsseg checkpoint holds, as ``label: text`` lines for ``rsseg weights info``."""
    import torch

    from rsseg.models.weights import read_state_dict, unwrap_state_dict

    summary: dict[str, str] = {"file": str(path)}
    raw = load_tensor_file(path, "weights file", "a state dict, a checkpoint or an rsseg .ckpt") if path.is_file() else None
    if isinstance(raw, dict) and isinstance(raw.get(META_KEY), dict):
        meta = raw[META_KEY]
        model = (meta.get("config") or {}).get("model") or {}
        summary["kind"] = "rsseg checkpoint"
        summary["classes"] = ", ".join(meta.get("classes") or [])
        summary["bands"] = ", ".join(meta.get("bands") or [])
        if model:
            summary["encoder"] = str(model.get("encoder"))
        state = {k.removeprefix(MODEL_PREFIX): v for k, v in raw["state_dict"].items() if isinstance(v, torch.Tensor)}
    else:
        summary["kind"] = "state dict"
        state = read_state_dict(path) if raw is None else unwrap_state_dict(raw, path)  # read once
    summary["tensors"] = str(len(state))
    summary["parameters"] = f"{sum(v.numel() for v in state.values()):,}"
    first_conv = next((k for k, v in state.items() if v.ndim == 4), None)
    if first_conv is not None:
        summary["input bands"] = f"{state[first_conv].shape[1]} ({first_conv} {tuple(state[first_conv].shape)})"
    prefixes = sorted({k.split(".")[0] for k in state})
    summary["top-level modules"] = ", ".join(prefixes[:12]) + (" ..." if len(prefixes) > 12 else "")
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in state.values()})
    summary["dtypes"] = ", ".join(dtypes)
    return summary
