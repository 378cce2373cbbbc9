"""Dataset specs behind a registry: one module per dataset, each registering a
:class:`~rsseg.data.datasets.base.DatasetSpec` with :func:`register_dataset`.

Adding a dataset = one module in this package (every module here is imported, which registers
its spec, its option keys and its checks) + its ``configs/<name>/`` YAMLs.
"""

from __future__ import annotations

import copy
import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING

from rsseg.config import Config, DatasetConfig
from rsseg.data.datasets.base import (
    DATASETS,
    SPLITS,
    DatasetSpec,
    dataset_names,
    get_dataset,
    holdout,
    register_dataset,
)
from rsseg.data.raster import TilePair
from rsseg.errors import DatasetNotFoundError

if TYPE_CHECKING:
    from rsseg.data.datamodule import RsSegDataModule
    from rsseg.data.stats import DatasetStats
    from rsseg.progress import ProgressFn

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "DATASETS",
    "SPLITS",
    "DatasetSpec",
    "build_datamodule",
    "dataset_names",
    "dataset_pairs",
    "get_dataset",
    "holdout",
    "register_dataset",
    "resolve_dataset_config",
    "stats_for_path",
]


def resolve_dataset_config(ds: DatasetConfig) -> DatasetConfig:
    """A copy of ``ds`` with its dataset's classes, colours, bands and gsd filled in
    (:meth:`DatasetSpec.resolve`)."""
    return get_dataset(ds.name).resolve(ds)


def dataset_pairs(ds: DatasetConfig, split: str, download: bool = False) -> list[TilePair]:
    """All image/label pairs of ``split`` for a resolved dataset config."""
    return get_dataset(ds.name).find_pairs(ds, split, download)


def build_datamodule(cfg: Config, download: bool = False) -> RsSegDataModule:
    """The datamodule for ``cfg.dataset`` (``download``: fetch LoveDA from Zenodo through TorchGeo)."""
    return get_dataset(cfg.dataset.name).build_datamodule(cfg, download=download)


def stats_for_path(path: str | Path, cfg: Config, split: str = "train", use_cache: bool = True,
                   on_progress: ProgressFn | None = None) -> DatasetStats:
    """Statistics of the ``split`` (default: training) files of a dataset root or a folder.

    ``path`` replaces ``cfg.dataset.root``; a folder may use any layout the folder datamodule
    accepts, or hold a single ``image.*`` + ``mask.*`` pair. For a folder without a val folder the
    training split excludes the held-out validation files, exactly as training sees it.
    ``on_progress`` (:data:`rsseg.progress.ProgressFn`) reports files done when statistics are computed.
    """
    if not Path(path).exists():
        raise DatasetNotFoundError(f"{path} does not exist; give a dataset root or a folder of images/ + masks/")
    cfg = copy.deepcopy(cfg)
    cfg.dataset.root = str(path)
    return get_dataset(cfg.dataset.name).split_stats(cfg, split, use_cache, on_progress)
