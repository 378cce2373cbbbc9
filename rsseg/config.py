"""Typed configuration: the schema of the YAML files in configs/ and their parsing.

One schema for every command. A YAML file may set any subset of keys (the rest keep the defaults
below, which are the paper hyper-parameters); unknown keys and wrongly typed values are rejected
with an error that names the dotted key, and a ``Literal`` field's choices are checked where the
field is declared. Sections other modules own (a dataset's options, a regularizer's section) are
added at parse time through :class:`Option`: this module imports nothing of rsseg but its errors
and constants. Loading a run's config (registries, dataset resolution, validation) is
:mod:`rsseg.runconfig`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from rsseg.constants import IGNORE_INDEX
from rsseg.errors import ConfigError


@dataclass(frozen=True)
class Option:
    """A key another module adds to an :class:`Extensible` section: its type (checked like any
    field) and a factory for its default."""

    key: str
    hint: Any
    default: Callable[[], Any]


def options_of(section: type) -> list[Option]:
    """The fields of the dataclass ``section`` as :class:`Option` s (each becomes a key)."""
    hints = typing.get_type_hints(section)
    out = []
    for f in dataclasses.fields(section):
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory
        else:
            default = (lambda v: lambda: copy.deepcopy(v))(f.default)
        out.append(Option(f.name, hints[f.name], default))
    return out


#: section type -> the keys other modules add to it (handed to :func:`parse_config`)
Extensions = Mapping[type, Sequence[Option]]


class Extensible:
    """A config section whose keys other modules extend (see :class:`Option`).

    The added keys' values live in the dataclass field ``extra`` and read and write as attributes
    (``cfg.dataset.scene``); :func:`plain` writes them as keys of the section.
    """

    extra: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        # only called when ordinary lookup fails: an added key, else a real AttributeError
        extra = self.__dict__.get("extra")
        if extra is not None and name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__!r} has no key {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        extra = self.__dict__.get("extra")
        if extra is not None and name in extra:
            extra[name] = value
        else:
            object.__setattr__(self, name, value)


def plain(obj: Any) -> Any:
    """Nested plain data (dicts, lists) of a config object, added keys included."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if isinstance(obj, Extensible) and f.name == "extra":
                out.update({k: plain(v) for k, v in value.items()})
            else:
                out[f.name] = plain(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    return copy.deepcopy(obj)


@dataclass
class DatasetConfig(Extensible):
    """What to read and how its labels are encoded (labels inside rsseg use ``ignore_index``).

    ``name`` is a registered dataset (:mod:`rsseg.data.datasets`); its spec fills in the classes,
    colours, bands and gsd left at these generic defaults, and declares its own option keys
    (e.g. LoveDA's ``scene``), which live in its module.
    """

    name: str = "folder"
    root: str | None = None
    #: band names in the order the model sees them (e.g. red, green, blue, nir)
    bands: list[str] = field(default_factory=lambda: ["red", "green", "blue"])
    classes: list[str] = field(default_factory=lambda: ["background", "building"])
    #: one ``#rrggbb`` colour per class
    colors: list[str] = field(default_factory=lambda: ["#000000", "#ff0000"])
    ignore_index: int = IGNORE_INDEX
    #: fraction of the training split held out for validation where a dataset has no val split
    val_fraction: float = 0.1
    #: "imagenet", "stats" (from ``rsseg stats``) or "custom" (uses mean/std below)
    normalization: Literal["imagenet", "stats", "custom"] = "imagenet"
    mean: list[float] | None = None
    std: list[float] | None = None
    #: divisor bringing raw pixel values to [0, 1] (255 for uint8 imagery)
    scale: float = 255.0
    #: ground sample distance in metres, if known
    gsd: float | None = None
    num_workers: int = 0
    #: the option sections of the registered datasets (``scene``, ``geo``, ...), read and written
    #: as keys of ``dataset`` (see :class:`Extensible`)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class ModelConfig:
    """UNetFormer (Wang et al., ISPRS JPRS 2022) with a timm ``features_only`` encoder."""

    name: Literal["unetformer"] = "unetformer"
    encoder: str = "resnet18"
    #: timm's ImageNet weights of ``encoder`` (the same as ``weights: timm:<encoder>``)
    pretrained: bool = False
    #: encoder weights: a local file, ``timm:<tag>`` or ``torchgeo:<Enum>.<MEMBER>``
    #: (:mod:`rsseg.models.weights`); takes precedence over ``pretrained``
    weights: str | None = None
    decode_channels: int = 64
    window_size: int = 8
    num_heads: int = 8
    dropout: float = 0.1
    #: channels of the signed embedding the pixel classifier reads (and the regularizers act on)
    embed_dim: int = 64
    aux_head: bool = True


@dataclass
class RegularizersConfig(Extensible):
    """``loss.regularizers``: one section per registered regularizer (its key is the regularizer's
    name; the section type lives beside its class in :mod:`rsseg.losses.regularizers`)."""

    #: reduce per-class sums and counts across DDP ranks so class means use the global batch
    #: (a no-op on one device)
    sync_centers: bool = True
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def enabled(self) -> list[str]:
        """Names of the enabled regularizers, in registration order."""
        return [name for name, section in self.extra.items() if section.enabled]


@dataclass
class LossConfig:
    #: "ce" (soft CE) or "ce_dice" (soft CE + Dice, the UNetFormer reference)
    seg: Literal["ce", "ce_dice"] = "ce_dice"
    label_smoothing: float = 0.05
    aux_weight: float = 0.4
    #: cross-entropy class weights: "none", or "median_frequency" (w_k = median(f) / f_k from the
    #: training pixel frequencies; Eigen and Fergus 2015), a class-balanced baseline
    class_weights: Literal["none", "median_frequency"] = "none"
    regularizers: RegularizersConfig = field(default_factory=RegularizersConfig)


@dataclass
class OptimConfig:
    """In2NeCT's protocol: lr 5e-4, weight decay 0.01, cosine, batch 16, 512 crops (the paper names
    Adam; rsseg's AdamW decouples the decay, which Adam's L2 term does not)."""

    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = 5e-4
    #: backbone lr = lr * backbone_lr_factor (UNetFormer reference: 6e-5 vs 6e-4)
    backbone_lr_factor: float = 0.1
    weight_decay: float = 0.01
    #: no weight decay on biases and normalisation parameters
    decay_norm_bias: bool = False
    schedule: Literal["cosine", "poly", "constant"] = "cosine"
    warmup_epochs: int = 0
    max_epochs: int = 50
    batch_size: int = 16
    crop_size: int = 512
    scales: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0, 1.25, 1.5])
    seed: int = 42


TTAMode = Literal["none", "flip", "d4", "ms"]
#: test-time augmentation modes (the one list: config check, CLI choices, viewer, predictor)
TTA_MODES: tuple[str, ...] = typing.get_args(TTAMode)


@dataclass
class InferenceConfig:
    tile: int = 1024
    overlap: int = 256
    batch: int = 8
    #: test-time augmentation (choices: :data:`TTA_MODES`)
    tta: TTAMode = "none"


@dataclass
class Config:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    def to_dict(self) -> dict[str, Any]:
        return plain(self)


#: inference engines (``--engine`` choices; resolved by :func:`rsseg.inference.settings.resolve_engine`)
ENGINES = ("auto", "torch", "onnx", "openvino")

def _check_value(key: str, value: Any, hint: Any, ext: Extensions) -> Any:
    """Return ``value`` coerced to ``hint`` or raise naming ``key``."""
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"config key '{key}' must be one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"config key '{key}' must be a mapping of names to values, got {value!r}")
        _, item = typing.get_args(hint)
        return {k: _check_value(f"{key}.{k}", v, item, ext) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(key, value, arg, ext)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        return [_check_value(f"{key}[{i}]", v, item, ext) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key, ext)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):
            # PyYAML follows YAML 1.1, which reads 1e-3 (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint!r} for {key}")  # a bug in the schema


def check_choice(key: str, value: Any, choices: Any) -> None:
    """Refuse ``value`` unless it is one of the ``Literal`` type ``choices`` (for constructors
    called without a config, so a choice is declared once, in its ``Literal``)."""
    _check_value(key, value, choices, {})


def _build(cls: type, data: Any, prefix: str, ext: Extensions) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix or '<top>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    extensible = issubclass(cls, Extensible)
    added = {o.key: o for o in ext.get(cls, ())} if extensible else {}
    known = {f.name for f in dataclasses.fields(cls) if not (extensible and f.name == "extra")} | set(added)
    for key in data:
        if key not in known:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"unknown config key '{where}' (known keys here: {', '.join(sorted(known))})")
    kwargs = {}
    extra = {}
    for name in added:
        path = f"{prefix}.{name}" if prefix else name
        extra[name] = _check_value(path, data[name], added[name].hint, ext) if name in data else \
            _check_value(path, plain(added[name].default()), added[name].hint, ext)
    for name, value in data.items():
        if name not in added:
            kwargs[name] = _check_value(f"{prefix}.{name}" if prefix else name, value, hints[name], ext)
    for f in dataclasses.fields(cls):
        # a section the data leaves out is built too, so the keys added to it get their defaults
        if f.name not in kwargs and dataclasses.is_dataclass(hints[f.name]):
            kwargs[f.name] = _build(hints[f.name], {}, f"{prefix}.{f.name}" if prefix else f.name, ext)
    if extensible:
        kwargs["extra"] = extra
    return cls(**kwargs)


def parse_section(cls: type, data: Any, prefix: str) -> Any:
    """One section that no other module extends (e.g. :class:`InferenceConfig`), type-checked."""
    return _build(cls, data, prefix, {})


def parse_config(data: dict[str, Any], extensions: Extensions | None = None) -> Config:
    """A :class:`Config` from nested plain data (e.g. parsed YAML), each value type-checked;
    ``extensions``: the keys other modules add to extensible sections."""
    return _build(Config, data, "", extensions or {})


_HEX_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
#: drawn for a malformed colour in (untrusted) checkpoint metadata
FALLBACK_RGB = (128, 128, 128)


def is_hex_color(color: object) -> bool:
    return isinstance(color, str) and bool(_HEX_COLOR.match(color))


def hex_rgb(color: str) -> tuple[int, int, int]:
    """``'#rrggbb'`` -> (r, g, b); grey for anything malformed."""
    if not is_hex_color(color):
        return FALLBACK_RGB
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a config file, resolving its optional ``base:`` (a path or list of paths, relative to
    the file) first, so one file per dataset x method only states what differs."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (see configs/ for examples)")
    if path.resolve() in seen:
        raise ConfigError(f"config file {path} includes itself through 'base'")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections (dataset, model, ...)")
    bases = data.pop("base", None) or []
    merged: dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merged = _merge(merged, read_yaml(path.parent / base, (*seen, path.resolve())))
    return _merge(merged, data)


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``a.b.c=value`` set (value parsed as YAML)."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value, e.g. optim.lr=0.001")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: '{part}' is not a section")
        node[parts[-1]] = value
    return data


def config_to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
