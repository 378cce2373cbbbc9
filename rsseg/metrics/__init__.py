"""rsseg.metrics: the confusion matrix, segmentation scores, neural-collapse diagnostics, imbalance summaries.

Names are imported on first use (PEP 562): scoring a raster (:mod:`rsseg.metrics.confusion`,
:mod:`rsseg.metrics.segmentation`) needs numpy only, and the ONNX prediction path must not load
torch through the collapse diagnostics.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CollapseStats": "rsseg.metrics.collapse",
    "ConfusionAccumulator": "rsseg.metrics.confusion",
    "confusion_matrix": "rsseg.metrics.confusion",
    "default_exclusions": "rsseg.metrics.segmentation",
    "frequency_accuracy_correlation": "rsseg.metrics.imbalance",
    "head_common_tail": "rsseg.metrics.segmentation",
    "imbalance_factors": "rsseg.metrics.imbalance",
    "segmentation_scores": "rsseg.metrics.segmentation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    try:  # a submodule, e.g. ``rsseg.metrics.collapse`` after a bare ``import rsseg.metrics``
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return __all__
