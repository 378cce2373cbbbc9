"""Dataset specs behind a registry: one module per dataset, each registering a
:class:`~rsseg.data.datasets.base.DatasetSpec` with :func:`register_dataset`.

Adding a dataset = one module in this package (every module here is imported, which registers
its spec) + its ``configs/<name>/`` YAMLs.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING

from rsseg.data.datasets.base import SPLITS, DatasetSpec, dataset_names, get_dataset, holdout, register_dataset
from rsseg.data.raster import TilePair
from rsseg.errors import ConfigError, DatasetNotFoundError

if TYPE_CHECKING:
    from rsseg.config import DatasetConfig

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "SPLITS",
    "DatasetSpec",
    "dataset_names",
    "dataset_pairs",
    "get_dataset",
    "holdout",
    "register_dataset",
    "resolve_dataset_config",
]


def resolve_dataset_config(ds: DatasetConfig) -> DatasetConfig:
    """A copy of ``ds`` with its dataset's classes, colours, bands and gsd filled in
    (:meth:`DatasetSpec.resolve`)."""
    return get_dataset(ds.name).resolve(ds)


def dataset_pairs(ds: DatasetConfig, split: str, download: bool = False, eroded: bool = False) -> list[TilePair]:
    """All image/label pairs of ``split`` for a resolved dataset config."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if ds.root is None:
        raise ConfigError("config key 'dataset.root' is not set: point it at the dataset folder")
    spec = get_dataset(ds.name)
    if not Path(ds.root).is_dir() and not (download and spec.downloadable):
        raise DatasetNotFoundError(f"dataset root {ds.root} does not exist (config key 'dataset.root'); {spec.hint()}")
    return spec.pairs(ds, split, download, eroded)
