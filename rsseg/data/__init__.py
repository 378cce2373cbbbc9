"""Datasets, datamodules, batch augmentation and dataset statistics.

Public API: :func:`build_datamodule` / :class:`RsSegDataModule`, the dataset registry
(:func:`get_dataset`, :func:`resolve_dataset_config`, :mod:`rsseg.data.datasets`), the one
normalisation (:class:`Normalizer`), :func:`augment_batch`, and the statistics in
:mod:`rsseg.data.stats`.

Names are imported on first use (PEP 562): leaf modules such as :mod:`rsseg.constants`
must not pull Lightning and TorchGeo in with them.
"""

from __future__ import annotations

from rsseg.lazy import lazy_exports

_EXPORTS = {
    "IGNORE_INDEX": "rsseg.constants",
    "IMAGENET_MEAN": "rsseg.data.normalize",
    "IMAGENET_STD": "rsseg.data.normalize",
    "Normalizer": "rsseg.data.normalize",
    "DatasetSpec": "rsseg.data.datasets",
    "dataset_names": "rsseg.data.datasets",
    "get_dataset": "rsseg.data.datasets",
    "register_dataset": "rsseg.data.datasets",
    "resolve_dataset_config": "rsseg.data.datasets",
    "augment_batch": "rsseg.data.augment",
    "RsSegDataModule": "rsseg.data.datamodule",
    "build_datamodule": "rsseg.data.datasets",
    "DatasetStats": "rsseg.data.stats",
    "compute_stats": "rsseg.data.stats",
    "log_prior_from_counts": "rsseg.data.stats",
    "log_region_prior": "rsseg.data.stats",
    "stats_for_path": "rsseg.data.datasets",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
