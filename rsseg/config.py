"""Typed configuration: YAML files in configs/ loaded into dataclasses.

One schema for every command. A YAML file may set any subset of keys (the rest keep the defaults
below, which are the paper hyper-parameters); unknown keys and wrongly typed values are rejected
with an error that names the dotted key. CLI flags and ``key=value`` overrides are applied on top
with :func:`apply_overrides`.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rsseg.data.constants import IGNORE_INDEX
from rsseg.errors import ConfigError, RsSegError


def __getattr__(name: str) -> Any:
    # PEP 562: ``DATASET_NAMES`` is read from the dataset registry (rsseg.data.datasets) on first
    # use, so the registry stays the one list of datasets and importing rsseg.config stays cheap.
    if name == "DATASET_NAMES":
        from rsseg.data.datasets import dataset_names

        return dataset_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
# ---- geo / torchgeo dataset kinds (rsseg.data.geo, rsseg.data.torchgeo_adapter) ------------------
@dataclass
class GeoSourceConfig:
    """``dataset.name: geo``: georeferenced scenes + vector labels, read through TorchGeo's
    ``RasterDataset & VectorDataset`` and tiled by its samplers (see :mod:`rsseg.data.geo`).

    Paths are relative to ``dataset.root`` (when set); ``images`` may hold globs.
    """

    #: image files or globs (GeoTIFF/COG/VRT...); several scenes and CRSs are fine
    images: list[str] = field(default_factory=list)
    #: vector label files (GPKG, SHP, GeoJSON, FlatGeobuf, ...), reprojected to the imagery's CRS
    labels: list[str] = field(default_factory=list)
    #: layer of a multi-layer label file (GeoPackage); default the first
    layer: str | None = None
    #: attribute holding each polygon's class: a name in dataset.classes or a class index
    attribute: str | None = None
    #: without ``attribute``: every polygon is this class (e.g. building footprints)
    label_class: str | None = None
    #: class of the pixels no polygon covers; null = ignore them (labels only where drawn)
    background: str | None = "background"
    #: optional vector file whose polygons limit training and validation (where labels are complete)
    aoi: str | None = None
    #: side of the square blocks (pixels) the region is split into for the spatial train/val split
    block_size: int = 1024
    #: random training patches per epoch (default: about the training area / patch area)
    samples_per_epoch: int | None = None


@dataclass
class TorchGeoSourceConfig:
    """``dataset.name: torchgeo``: any TorchGeo segmentation datamodule, by class path and init
    arguments as LightningCLI writes them (see :mod:`rsseg.data.torchgeo_adapter`)."""

    #: e.g. torchgeo.datamodules.LoveDADataModule
    class_path: str | None = None
    #: keyword arguments of the class (dataset.root, when set, is passed as ``root``)
    init_args: dict[str, Any] = field(default_factory=dict)
    #: raw mask value -> rsseg class index (255 = ignore), e.g. LoveDA [255, 0, 1, 2, 3, 4, 5, 6];
    #: null: mask values are already class indices
    label_map: list[int] | None = None


@dataclass
class DatasetConfig:
    """What to read and how its labels are encoded (labels inside rsseg use ``ignore_index``).

    ``name`` is a registered dataset (:mod:`rsseg.data.datasets`); its spec fills in the classes,
    colours, bands and gsd left at these generic defaults (:func:`rsseg.data.datasets.resolve_dataset_config`).
    """

    name: str = "folder"
    root: str | None = None
    #: band names in the order the model sees them (e.g. red, green, blue, nir)
    bands: list[str] = field(default_factory=lambda: ["red", "green", "blue"])
    classes: list[str] = field(default_factory=lambda: ["background", "building"])
    #: one ``#rrggbb`` colour per class
    colors: list[str] = field(default_factory=lambda: ["#000000", "#ff0000"])
    ignore_index: int = IGNORE_INDEX
    #: ``name: folder`` masks: ``index`` (band 1 holds 0..K-1), ``color`` (RGB, one ``colors`` entry
    #: per class, other colours -> ignore) or ``auto`` (colour when the mask has 3+ bands)
    mask_encoding: str = "auto"
    #: LoveDA scene filter: urban, rural or both
    scene: str = "both"
    #: ISPRS: use the eroded "noBoundary" labels for evaluation
    eroded_labels: bool = False
    #: fraction of the training split held out for validation where a dataset has no val split
    val_fraction: float = 0.1
    #: "imagenet", "stats" (from ``rsseg stats``) or "custom" (uses mean/std below)
    normalization: str = "imagenet"
    mean: list[float] | None = None
    std: list[float] | None = None
    #: divisor bringing raw pixel values to [0, 1] (255 for uint8 imagery)
    scale: float = 255.0
    #: ground sample distance in metres, if known
    gsd: float | None = None
    num_workers: int = 0
    #: ``name: geo`` settings
    geo: GeoSourceConfig = field(default_factory=GeoSourceConfig)
    #: ``name: torchgeo`` settings
    torchgeo: TorchGeoSourceConfig = field(default_factory=TorchGeoSourceConfig)


@dataclass
class ModelConfig:
    """UNetFormer (Wang et al., ISPRS JPRS 2022) with a timm ``features_only`` encoder."""

    name: str = "unetformer"
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


# -- neural-collapse regularizers -------------------------------------------------------------
# One dataclass per regularizer, a field of RegularizersConfig named like its registry key in
# rsseg.losses (a new regularizer = its class there + its section here). Defaults follow the
# papers as written; departures are named options.


@dataclass
class In2NeCTConfig:
    """In2NeCT (Shen et al.) Eq. 7: ``L_seg + weight * (inter_weight L_inter + intra_weight L_intra)``.

    ``reduction="sum"`` sums the per-class terms over the classes as Eq. 5-6 do ("mean" averages
    them); ``temperature`` divides the cosines of Eq. 6 (1.0 = none, as written; SupCon uses 0.1).
    ``scale`` is the norm the class means are brought to in L_inter when ``normalize`` is on;
    ``centre`` subtracts the global pixel mean from the class means first (the NC2 centring;
    see :func:`rsseg.losses.inter_class_loss`).
    """

    enabled: bool = False
    weight: float = 0.2
    inter_weight: float = 1.0
    intra_weight: float = 1.0
    scale: float = 5.0
    temperature: float = 1.0
    reduction: str = "sum"
    pixels_per_class: int = 512
    normalize: bool = True
    centre: bool = False


@dataclass
class CeCoConfig:
    """Center Collapse (Zhong et al., CVPR 2023) Eq. 4-5, ``weight`` = lambda = 0.5, the paper's best
    on 2D images (ADE20K, Table 2; 0.4 was best on the 3D ScanNet200).

    ``center_classifier`` / ``pixel_classifier``: "fixed" (simplex ETF, never trained) or
    "learned", the rows of the paper's Table 1 (the method: PC learned, CC fixed).
    ``head_relu``: a ReLU after the center head's Linear (the released code; non-negative centres
    cannot reach the ETF's signed vertices). ``use_prior``: add log image-level class frequencies
    to the center logits (a balanced softmax the released code adds; not in Eq. 4).
    """

    enabled: bool = False
    weight: float = 0.5
    proj_dim: int = 128
    scale: float = 5.0
    center_classifier: str = "fixed"
    pixel_classifier: str = "learned"
    head_relu: bool = False
    use_prior: bool = False
    #: "sum" over the present classes as Eq. 4 writes it, or "mean"
    reduction: str = "sum"


@dataclass
class RegionRebalanceConfig:
    """Region Rebalance (Cui et al.) Eq. 8-9, ``weight`` = lambda = 0.3; ``use_prior`` adds the
    log region frequencies log F(k) (Eq. 7; off = plain CE on regions, the Fig. 7 ablation)."""

    enabled: bool = False
    weight: float = 0.3
    use_prior: bool = True


@dataclass
class NCFeatureConfig:
    """L_W + L_B feature terms (Liu et al. Eq. 13, 15, 16); ``normalize`` L2-normalises the
    embedding first (not in the paper); L_W ``reduction`` "sum" as Eq. 13, or "mean"."""

    enabled: bool = False
    weight: float = 1.0
    lambda_w: float = 0.01
    lambda_b: float = 0.1
    normalize: bool = True
    reduction: str = "sum"


@dataclass
class RegularizersConfig:
    in2nect: In2NeCTConfig = field(default_factory=In2NeCTConfig)
    ceco: CeCoConfig = field(default_factory=CeCoConfig)
    rr: RegionRebalanceConfig = field(default_factory=RegionRebalanceConfig)
    nc: NCFeatureConfig = field(default_factory=NCFeatureConfig)
    #: reduce per-class sums and counts across DDP ranks so class means use the global batch
    #: (a no-op on one device)
    sync_centers: bool = True

    def enabled(self) -> list[str]:
        return [name for name in regularizer_names() if getattr(self, name).enabled]


def regularizer_names() -> tuple[str, ...]:
    """The regularizer sections of :class:`RegularizersConfig` (each has ``enabled``)."""
    return tuple(f.name for f in dataclasses.fields(RegularizersConfig) if f.default_factory is not dataclasses.MISSING)


@dataclass
class LossConfig:
    #: "ce" (soft CE) or "ce_dice" (soft CE + Dice, the UNetFormer reference)
    seg: str = "ce_dice"
    label_smoothing: float = 0.05
    aux_weight: float = 0.4
    #: cross-entropy class weights: "none", or "median_frequency" (w_k = median(f) / f_k from the
    #: training pixel frequencies; Eigen and Fergus 2015), a class-balanced baseline
    class_weights: str = "none"
    regularizers: RegularizersConfig = field(default_factory=RegularizersConfig)


@dataclass
class OptimConfig:
    """In2NeCT's protocol: lr 5e-4, weight decay 0.01, cosine, batch 16, 512 crops (the paper names
    Adam; rsseg's AdamW decouples the decay, which Adam's L2 term does not)."""

    optimizer: str = "adamw"
    lr: float = 5e-4
    #: backbone lr = lr * backbone_lr_factor (UNetFormer reference: 6e-5 vs 6e-4)
    backbone_lr_factor: float = 0.1
    weight_decay: float = 0.01
    #: no weight decay on biases and normalisation parameters
    decay_norm_bias: bool = False
    schedule: str = "cosine"
    warmup_epochs: int = 0
    max_epochs: int = 50
    batch_size: int = 16
    crop_size: int = 512
    scales: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0, 1.25, 1.5])
    seed: int = 42


@dataclass
class InferenceConfig:
    tile: int = 1024
    overlap: int = 256
    batch: int = 8
    #: one of :data:`TTA_MODES`
    tta: str = "none"


@dataclass
class Config:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: test-time augmentation modes (the one list: config check, CLI choices, viewer, predictor)
TTA_MODES = ("none", "flip", "d4", "ms")
#: inference engines (``--engine`` choices; resolved by :func:`rsseg.inference.settings.resolve_engine`)
ENGINES = ("auto", "torch", "onnx")

_CHOICES: dict[str, tuple[str, ...]] = {
    "dataset.scene": ("urban", "rural", "both"),
    "dataset.mask_encoding": ("auto", "index", "color"),
    "dataset.normalization": ("imagenet", "stats", "custom"),
    "model.name": ("unetformer",),
    "loss.seg": ("ce", "ce_dice"),
    "loss.regularizers.in2nect.reduction": ("sum", "mean"),
    "loss.regularizers.ceco.reduction": ("sum", "mean"),
    "loss.regularizers.nc.reduction": ("sum", "mean"),
    "loss.class_weights": ("none", "median_frequency"),
    "loss.regularizers.ceco.center_classifier": ("fixed", "learned"),
    "loss.regularizers.ceco.pixel_classifier": ("fixed", "learned"),
    "optim.optimizer": ("adamw", "adam", "sgd"),
    "optim.schedule": ("cosine", "poly", "constant"),
    "inference.tta": TTA_MODES,
}


def _check_value(key: str, value: Any, hint: Any) -> Any:
    """Return ``value`` coerced to ``hint`` or raise naming ``key``."""
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"config key '{key}' must be a mapping of names to values, got {value!r}")
        _, item = typing.get_args(hint)
        return {k: _check_value(f"{key}.{k}", v, item) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(key, value, arg)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        return [_check_value(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
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
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        if key in _CHOICES and value not in _CHOICES[key]:
            raise ConfigError(f"config key '{key}' must be one of {', '.join(_CHOICES[key])}, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint!r} for {key}")  # a bug in the schema


def _build(cls: type, data: Any, prefix: str = "") -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix or '<top>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"unknown config key '{where}' (known keys here: {', '.join(sorted(known))})")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _check_value(f"{prefix}.{name}" if prefix else name, value, hints[name])
    obj = cls(**kwargs)
    return obj


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


def _validate(cfg: Config) -> Config:
    from rsseg.data.datasets import dataset_names, resolve_dataset_config

    if cfg.dataset.name not in dataset_names():
        raise ConfigError(
            f"config key 'dataset.name' must be one of {', '.join(dataset_names())}, got {cfg.dataset.name!r}")
    # the dataset's spec fills in classes, colours, bands and gsd the config leaves at the defaults
    cfg.dataset = ds = resolve_dataset_config(cfg.dataset)
    if len(ds.colors) != len(ds.classes):
        raise ConfigError(
            f"config key 'dataset.colors' has {len(ds.colors)} entries but 'dataset.classes' has {len(ds.classes)}"
        )
    for i, c in enumerate(ds.colors):
        if not is_hex_color(c):
            raise ConfigError(f"config key 'dataset.colors[{i}]' must be '#rrggbb', got {c!r}")
    if not 0 <= ds.ignore_index <= 255 or ds.ignore_index < len(ds.classes):
        raise ConfigError("config key 'dataset.ignore_index' must be in [num_classes, 255]")
    if ds.normalization == "custom" and (ds.mean is None or ds.std is None):
        raise ConfigError("config keys 'dataset.mean' and 'dataset.std' are required when dataset.normalization is custom")
    for key in ("mean", "std"):
        v = getattr(ds, key)
        if v is not None and len(v) != len(ds.bands):
            raise ConfigError(f"config key 'dataset.{key}' needs one value per band ({len(ds.bands)}), got {len(v)}")
    from rsseg.data.datasets import get_dataset

    get_dataset(ds.name).validate(ds)
    if cfg.inference.overlap >= cfg.inference.tile:
        raise ConfigError("config key 'inference.overlap' must be smaller than 'inference.tile'")
    if cfg.optim.crop_size % 32:
        raise ConfigError("config key 'optim.crop_size' must be a multiple of 32")
    return cfg


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from nested plain data (e.g. parsed YAML)."""
    return _validate(_build(Config, data))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (defaults when ``path`` is None) and apply ``key=value`` overrides."""
    data = _read_yaml(Path(path)) if path is not None else {}
    return config_from_dict(apply_overrides(data, overrides or []))


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
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
        merged = _merge(merged, _read_yaml(path.parent / base, (*seen, path.resolve())))
    return _merge(merged, data)


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``a.b.c=value`` set (value parsed as YAML)."""
    import copy

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


def bundled_config(dataset: str, method: str = "ce") -> Path:
    """Path of the shipped ``configs/<dataset>/<method>.yaml``."""
    from importlib.resources import files

    path = Path(str(files("rsseg.configs").joinpath(dataset, f"{method}.yaml")))
    if not path.is_file():
        raise ConfigError(f"no bundled config for dataset {dataset!r} and method {method!r}")
    return path


def training_config(
    config: str | Path | None = None,
    *,
    dataset: str | None = None,
    root: str | None = None,
    regularizers: list[str] | None = None,
    overrides: list[str] | None = None,
) -> Config:
    """The config ``rsseg train`` runs: a YAML file (or the bundled one for ``dataset``: its spec's
    ``default_method``), then the flags, then ``key=value`` overrides, each on top of the previous."""
    from rsseg.data.datasets import get_dataset

    spec = get_dataset(dataset or "folder")  # an unknown name fails here, listing the registered ones
    data = _read_yaml(Path(config)) if config else _read_yaml(bundled_config(spec.name, spec.default_method))
    flags: list[str] = []
    if dataset is not None:
        flags.append(f"dataset.name={dataset}")
    if root is not None:
        flags.append(f"dataset.root={root}")
    if regularizers:
        names = regularizer_names()
        unknown = set(regularizers) - {*names, "none"}
        if unknown:
            raise RsSegError(f"unknown regularizer(s) {sorted(unknown)}; choose from {', '.join(names)} or none")
        flags += [f"loss.regularizers.{r}.enabled={'true' if r in regularizers else 'false'}" for r in names]
    return absolute_root(config_from_dict(apply_overrides(data, flags + list(overrides or []))))


def absolute_root(cfg: Config) -> Config:
    """``cfg`` with ``dataset.root`` made absolute (relative roots are relative to the working
    directory), so a checkpoint's config finds its dataset from any directory (``evaluate -m``)."""
    import dataclasses

    root = cfg.dataset.root
    if not root or Path(root).is_absolute():
        return cfg
    return dataclasses.replace(cfg, dataset=dataclasses.replace(cfg.dataset, root=str(Path(root).expanduser().absolute())))
