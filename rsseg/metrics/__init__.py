"""rsseg.metrics: the confusion matrix, segmentation scores, per-object scores, neural-collapse diagnostics, imbalance summaries.

Names are imported on first use (PEP 562): scoring a raster (:mod:`rsseg.metrics.confusion`,
:mod:`rsseg.metrics.segmentation`) needs numpy only, and the ONNX prediction path must not load
torch through the collapse diagnostics.
"""

from __future__ import annotations

from rsseg.lazy import lazy_exports

_EXPORTS = {
    "CollapseStats": "rsseg.metrics.collapse",
    "ObjectScores": "rsseg.metrics.objects",
    "ConfusionAccumulator": "rsseg.metrics.confusion",
    "confusion_matrix": "rsseg.metrics.confusion",
    "default_exclusions": "rsseg.metrics.segmentation",
    "default_object_classes": "rsseg.metrics.objects",
    "frequency_accuracy_correlation": "rsseg.metrics.imbalance",
    "head_common_tail": "rsseg.metrics.segmentation",
    "imbalance_factors": "rsseg.metrics.imbalance",
    "match_objects": "rsseg.metrics.objects",
    "object_scores": "rsseg.metrics.objects",
    "segmentation_scores": "rsseg.metrics.segmentation",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
