"""Self-describing model checkpoints.

A checkpoint is a Lightning checkpoint (``state_dict`` with the model's parameters under the
``model.`` prefix; ``last.ckpt`` also the optimizer state, epoch... for resuming) plus an
``rsseg`` entry holding :class:`ModelMeta` as plain data. ``rsseg predict`` needs nothing but this
file and a raster. Loading always uses ``torch.load(weights_only=True)``: checkpoints are
untrusted files and must not run code.

An exported model (``rsseg export``, a ``.onnx`` file) describes itself the same way: its
``metadata_props`` hold the same :class:`ModelMeta` under ``rsseg`` (plus the export's
provenance) and, derived from it, the STAC Machine Learning Model extension's fields under
``mlm`` (:func:`mlm_properties`). :func:`read_meta` reads both kinds, without torch.
"""

from __future__ import annotations

import codecs
import collections
import dataclasses
import importlib
import json
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rsseg.config import Config, InferenceConfig, parse_section
from rsseg.constants import IGNORE_INDEX
from rsseg.errors import BackendUnavailableError, CheckpointError, CheckpointNotFoundError
from rsseg.extras import CHECKPOINT_INSTEAD, RUNTIME_INSTALL, RUNTIME_MODULE, needs_train
from rsseg.io import Staging, atomic_path, file_sha256, load_tensor_file, load_torch_file, write_error

if TYPE_CHECKING:  # torch loads lazily: reading metadata for the ONNX engine must not import it
    import torch
    from torch import nn

#: /2: the classifier reads the signed embedding projection; /1 weights load with the
#: same shapes but the classifier was trained on the feature before it, so they are refused
FORMAT = "rsseg-checkpoint/2"
META_KEY = "rsseg"
MODEL_PREFIX = "model."
#: an exported model file (``rsseg export``): predict, evaluate and the viewer take it for a checkpoint
ONNX_SUFFIX = ".onnx"
#: key of the STAC MLM view (:func:`mlm_properties`, JSON) in an exported model's ``metadata_props``
MLM_KEY = "mlm"
#: the version of the STAC Machine Learning Model extension whose field names rsseg writes
MLM_SCHEMA = "https://stac-extensions.github.io/mlm/v1.4.0/schema.json"


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
    #: provenance of an exported model file (``rsseg export``): the sha256 of the checkpoint it was
    #: exported from and the rsseg version that wrote it; None in checkpoints
    checkpoint_sha256: str | None = None
    rsseg_version: str | None = None
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
    if is_onnx_model(path):
        raise CheckpointError(f"{path} is an exported ONNX model, not a checkpoint: rsseg predict, evaluate -m and the "
                              "viewer run it as it is; this step needs the .ckpt it was exported from")
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
    """Read only the metadata of a checkpoint or an exported ``.onnx`` model
    (:func:`read_onnx_meta`), without importing torch when the checkpoint is a ``torch.save`` zip of
    plain data (every rsseg checkpoint): a Dask client or the ONNX engine never pay torch's import
    (~700 MB with CUDA). Other files go through :func:`read_checkpoint`, which names their problem."""
    path = Path(path)
    if is_onnx_model(path):
        return read_onnx_meta(path)
    ckpt = _read_plain_pickle(path) if path.is_file() else None
    if not isinstance(ckpt, dict) or META_KEY not in ckpt or "state_dict" not in ckpt:
        ckpt = read_checkpoint(path)
    return ModelMeta.from_dict(ckpt[META_KEY])


def is_onnx_model(path: str | Path) -> bool:
    """Whether ``path`` names an exported model (``.onnx``) rather than a checkpoint."""
    return str(path).lower().endswith(ONNX_SUFFIX)


#: the one line for a runtime that is not installed, by engine name ({name}: the model file)
_RUNTIME_MISSING = {
    "onnx": "{name} is an ONNX model; reading and running it needs ONNX Runtime: {install}",
    "openvino": "running {name} with the openvino engine needs OpenVINO: {install} (or use --engine onnx)",
}


def import_runtime(engine: str, path: str | Path) -> Any:
    """The module of the CPU runtime ``engine`` runs an exported model with (``onnx``: onnxruntime,
    ``openvino``), or one line naming what installs it (``path``: the model)."""
    try:
        return importlib.import_module(RUNTIME_MODULE[engine])
    except ImportError:
        raise BackendUnavailableError(_RUNTIME_MISSING[engine].format(name=Path(path).name,
                                                                      install=RUNTIME_INSTALL[engine])) from None


def require_model_file(path: str | Path) -> Path:
    """``path`` as a Path; a missing exported model is one line naming ``rsseg export``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"model not found: {path} (export one from a checkpoint with "
                                      f"`rsseg export -m best.ckpt -o {path.name}`)")
    return path


def runtime_error_line(exc: BaseException) -> str:
    """The last line of a runtime's error (ONNX Runtime and OpenVINO raise pages), at most 160 characters."""
    text = str(exc).strip()
    return text.splitlines()[-1][:160] if text else type(exc).__name__


def unreadable_model(path: str | Path, exc: BaseException) -> CheckpointError:
    """The one line for a model file a runtime cannot load."""
    return CheckpointError(f"cannot read model {path}: not an ONNX file, or a corrupt or truncated one "
                           f"({runtime_error_line(exc)}); expected a .onnx written by `rsseg export`")


def onnx_session(path: str | Path, options: Any = None) -> Any:
    """An ONNX Runtime CPU session of the model file ``path`` (``options``: its
    ``SessionOptions``); a missing file, one ONNX Runtime cannot load, or no ONNX Runtime is one line."""
    path = require_model_file(path)
    ort = import_runtime("onnx", path)
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own types for any unloadable file
        raise unreadable_model(path, exc) from None


def onnx_meta(session: Any, path: str | Path) -> ModelMeta:
    """The :class:`ModelMeta` an exported model carries, from its ONNX Runtime ``session``
    (:func:`meta_from_props`)."""
    return meta_from_props(session.get_modelmeta().custom_metadata_map, path)


def meta_from_props(props: Mapping[str, str], path: str | Path) -> ModelMeta:
    """The :class:`ModelMeta` in an exported model's ``metadata_props`` (``props['rsseg']``, JSON), as
    any runtime lists them; a model exported by another tool is refused, naming ``rsseg export``."""
    name = Path(path).name
    if META_KEY not in props:
        raise CheckpointError(f"{path} is an ONNX model without rsseg metadata (classes, bands, normalisation, input "
                              f"range); export it from its checkpoint with `rsseg export -m best.ckpt -o {name}`")
    try:
        data = json.loads(props[META_KEY])
    except ValueError:
        raise CheckpointError(f"{path}: its rsseg metadata is not valid JSON; export it again with "
                              f"`rsseg export -m best.ckpt -o {name}`") from None
    return ModelMeta.from_dict(data)


def read_onnx_meta(path: str | Path) -> ModelMeta:
    """The metadata of an exported ``.onnx`` model, read through ONNX Runtime (which running it
    needs anyway) with every graph optimisation off: no torch, no onnx package."""
    ort = import_runtime("onnx", path)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # metadata only
    return onnx_meta(onnx_session(path, options), path)


def mlm_name(name: str) -> str:
    """``name`` as MLM allows it (``^[a-zA-Z][a-zA-Z0-9_.-]+[a-zA-Z0-9]$``): other characters become
    ``-``, and a name that does not start with a letter gets ``model-`` in front."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-_.")
    return name if re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]+[A-Za-z0-9]", name) else f"model-{name or 'rsseg'}"


def mlm_properties(meta: ModelMeta, name: str, *, total_parameters: int | None = None,
                   framework_version: str | None = None) -> dict[str, Any]:
    """``meta`` as the STAC Machine Learning Model extension's item properties (``mlm:*``, plus
    ``gsd``): a view for other tools, derived here and never read back (``ModelMeta`` is the source).

    The input is the normalised float32 [batch, channel, height, width] tensor of an exported model
    (height and width multiples of 32); ``value_scaling`` is rsseg's ``(raw / scale - mean) / std``
    written as the per-band z-score ``(raw - mean * scale) / (std * scale)``; the output is class
    logits with ``classification:classes`` (colours as hex ``color_hint``).
    """
    inference = meta.inference_config()
    model = meta.config.get("model") or {}
    contract = (f"raw {meta.input_dtype} pixels; the training images' per-band p1-p99 {meta.input_range}"
                if meta.input_dtype else "raw pixels")
    props: dict[str, Any] = {
        "mlm:name": mlm_name(name),
        "mlm:architecture": "UNetFormer",
        "mlm:tasks": ["semantic-segmentation"],
        "mlm:framework": "ONNX",
        "mlm:batch_size_suggestion": inference.batch,
        "mlm:accelerator": None,
        "mlm:accelerator_constrained": False,
        "mlm:input": [{
            "name": "image",
            "bands": list(meta.bands),
            "input": {"shape": [-1, meta.in_channels, -1, -1], "dim_order": ["batch", "channel", "height", "width"],
                      "data_type": "float32"},
            "description": f"{contract}, z-scored per band; height and width multiples of 32 "
                           f"(rsseg predicts {inference.tile} px windows overlapping by {inference.overlap} px)",
            "value_scaling": [{"type": "z-score", "mean": m * meta.scale, "stddev": s * meta.scale}
                              for m, s in zip(meta.mean, meta.std)],
            "resize_type": None,
            "pre_processing_function": None,
        }],
        "mlm:output": [{
            "name": "logits",
            "tasks": ["semantic-segmentation"],
            "result": {"shape": [-1, meta.num_classes, -1, -1], "dim_order": ["batch", "class", "height", "width"],
                       "data_type": "float32"},
            "description": "class logits per pixel: the argmax is the class id, the softmax its probability",
            "classification:classes": [{"value": i, "name": c, "description": c, "color_hint": color.lstrip("#")[:6].upper()}
                                       for i, (c, color) in enumerate(zip(meta.classes, meta.colors))],
            "post_processing_function": None,
        }],
        # rsseg's inference defaults and input contract, for tools that tile a scene themselves
        "mlm:hyperparameters": {"tile": inference.tile, "overlap": inference.overlap, "tta": inference.tta,
                                "input_dtype": meta.input_dtype, "input_range": meta.input_range},
    }
    if "pretrained" in model:  # the encoder's starting weights; MLM wants an explicit null source when none
        source = model.get("weights") or ("timm ImageNet weights" if model["pretrained"] else None)
        props["mlm:pretrained"], props["mlm:pretrained_source"] = source is not None, source
    if total_parameters is not None:
        props["mlm:total_parameters"] = total_parameters
    if framework_version is not None:
        props["mlm:framework_version"] = framework_version
    if meta.gsd is not None:
        props["gsd"] = meta.gsd
    return props


def mlm_item(properties: dict[str, Any], model_href: str, *, created: str) -> dict[str, Any]:
    """A STAC item (no geometry: a model is not a place) holding the MLM ``properties`` and the
    model file as its ``mlm:model`` asset at ``model_href``; ``created``: an ISO 8601 time."""
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [MLM_SCHEMA],
        "id": properties["mlm:name"],
        "geometry": None,
        "properties": {"datetime": created, **properties},
        "assets": {"model": {"href": model_href, "type": "application/octet-stream; application=onnx",
                             "title": f"{properties['mlm:name']} (ONNX, rsseg metadata inside)",
                             "roles": ["mlm:model", "model"], "mlm:artifact_type": "onnx"}},
        "links": [],
    }


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
    path: str | Path, out: str | Path, size: int = 512, dynamic: bool = True, *, stac: str | Path | None = None
) -> tuple[Path, ModelMeta]:
    """Export a checkpoint's inference graph to one self-describing ONNX file.

    Its ``metadata_props`` hold the checkpoint's :class:`ModelMeta` (``rsseg`` key, JSON: classes,
    colours, bands, normalisation, input contract, GSD, the config with the tile/overlap defaults)
    with the checkpoint's sha256 and the rsseg version added, and the STAC MLM view of it
    (``mlm`` key, :func:`mlm_properties`). ``stac``: also write a STAC item describing the file
    (:func:`mlm_item`); both appear complete or not at all.
    """
    import os
    from datetime import UTC, datetime

    import onnx

    from rsseg import __version__
    from rsseg.models import export_onnx

    model, meta = load_model(path)
    meta = dataclasses.replace(meta, checkpoint_sha256=file_sha256(path), rsseg_version=__version__)
    out = Path(out)
    mlm = mlm_properties(meta, out.stem, total_parameters=sum(p.numel() for p in model.parameters()),
                         framework_version=onnx.__version__)
    with Staging() as stage:  # the targets appear complete, with their metadata, or not at all
        tmp = stage.path(out)
        try:
            export_onnx(model, tmp, in_channels=meta.in_channels, height=size, width=size, dynamic=dynamic)
            proto = onnx.load(str(tmp))
            for key, value in ((META_KEY, meta.to_dict()), (MLM_KEY, mlm)):
                entry = proto.metadata_props.add()
                entry.key, entry.value = key, json.dumps(value)
            onnx.save(proto, str(tmp))
            if stac is not None:
                stac = Path(stac)
                created = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
                item = mlm_item(mlm, Path(os.path.relpath(out.resolve(), stac.resolve().parent)).as_posix(), created=created)
                stage.path(stac).write_text(json.dumps(item, indent=2))
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
