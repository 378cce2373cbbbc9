"""A run's configuration: the YAML schema of :mod:`rsseg.config` plus the keys the registered
datasets and regularizers own, then dataset resolution and validation.

This module sits above the data and losses packages: it asks the dataset registry for each
spec's option section and the regularizer registry for each regularizer's section, parses with
them, fills in the dataset's classes/colours/bands (:meth:`DatasetSpec.resolve`), and checks the
config (its own rules, then the spec's :meth:`DatasetSpec.validate`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from rsseg.config import (
    Config,
    DatasetConfig,
    Extensions,
    Option,
    RegularizersConfig,
    apply_overrides,
    is_hex_color,
    options_of,
    parse_config,
    read_yaml,
)
from rsseg.data.datasets import DATASETS, get_dataset
from rsseg.errors import ConfigError
from rsseg.losses.regularizers import REGULARIZERS, regularizer_names


def extensions() -> Extensions:
    """The keys the registered datasets add to ``dataset`` and the regularizers to
    ``loss.regularizers`` (one section each, keyed by name)."""
    dataset_keys: dict[str, tuple[str, Option]] = {}
    for name, spec in DATASETS.items():
        for option in options_of(spec.options) if spec.options is not None else ():
            owner, seen = dataset_keys.setdefault(option.key, (name, option))
            if seen.hint != option.hint:
                raise ValueError(f"datasets {owner!r} and {name!r} both declare 'dataset.{option.key}'")
    sections = [Option(name, cls.Section, cls.Section) for name, cls in REGULARIZERS.items()]
    return {DatasetConfig: [o for _, o in dataset_keys.values()], RegularizersConfig: sections}


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build, resolve and validate a :class:`Config` from nested plain data (e.g. parsed YAML)."""
    return validate(parse_config(data, extensions()))


def validate(cfg: Config) -> Config:
    """``cfg`` with its dataset's classes, colours, bands and gsd filled in, or a
    :class:`ConfigError` naming the first key a run cannot start with."""
    if cfg.dataset.name not in DATASETS:
        raise ConfigError(
            f"config key 'dataset.name' must be one of {', '.join(DATASETS.names())}, got {cfg.dataset.name!r}")
    spec = get_dataset(cfg.dataset.name)
    cfg.dataset = ds = spec.resolve(cfg.dataset)
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
    spec.validate(ds)
    if cfg.inference.overlap >= cfg.inference.tile:
        raise ConfigError("config key 'inference.overlap' must be smaller than 'inference.tile'")
    if cfg.optim.crop_size % 32:
        raise ConfigError("config key 'optim.crop_size' must be a multiple of 32")
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (defaults when ``path`` is None) and apply ``key=value`` overrides."""
    data = read_yaml(Path(path)) if path is not None else {}
    return config_from_dict(apply_overrides(data, overrides or []))


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
    spec = get_dataset(dataset or "folder")  # an unknown name fails here, listing the registered ones
    data = read_yaml(Path(config)) if config else read_yaml(bundled_config(spec.name, spec.default_method))
    flags: list[str] = []
    if dataset is not None:
        flags.append(f"dataset.name={dataset}")
    if root is not None:
        flags.append(f"dataset.root={root}")
    if regularizers:
        names = regularizer_names()
        unknown = set(regularizers) - {*names, "none"}
        if unknown:
            raise ConfigError(f"unknown regularizer(s) {sorted(unknown)}; choose from {', '.join(names)} or none")
        flags += [f"loss.regularizers.{r}.enabled={'true' if r in regularizers else 'false'}" for r in names]
    return absolute_root(config_from_dict(apply_overrides(data, flags + list(overrides or []))))


def absolute_root(cfg: Config) -> Config:
    """``cfg`` with ``dataset.root`` made absolute (relative roots are relative to the working
    directory), so a checkpoint's config finds its dataset from any directory (``evaluate -m``)."""
    root = cfg.dataset.root
    if not root or Path(root).is_absolute():
        return cfg
    ds = dataclasses.replace(cfg.dataset, root=str(Path(root).expanduser().absolute()), extra=dict(cfg.dataset.extra))
    return dataclasses.replace(cfg, dataset=ds)
