"""Datasets, datamodules, batch augmentation and dataset statistics.

Public API: :func:`build_datamodule` / :class:`RsSegDataModule`, :func:`dataset_defaults`,
:func:`augment_batch`, and the statistics in :mod:`rsseg.data.stats`.
"""

from rsseg.data.augment import augment_batch
from rsseg.data.datamodule import RsSegDataModule, build_datamodule
from rsseg.data.defaults import IMAGENET_MEAN, IMAGENET_STD, dataset_defaults, resolve_dataset_config
from rsseg.data.stats import DatasetStats, compute_stats, log_region_prior, stats_for_path

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DatasetStats",
    "RsSegDataModule",
    "augment_batch",
    "build_datamodule",
    "compute_stats",
    "dataset_defaults",
    "log_region_prior",
    "resolve_dataset_config",
    "stats_for_path",
]
