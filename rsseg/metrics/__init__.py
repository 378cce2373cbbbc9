"""rsseg.metrics: segmentation scores, neural-collapse diagnostics, imbalance summaries."""

from rsseg.metrics.collapse import CollapseStats
from rsseg.metrics.imbalance import frequency_accuracy_correlation, imbalance_factors
from rsseg.metrics.segmentation import confusion_matrix, default_exclusions, head_common_tail, segmentation_scores

__all__ = [
    "CollapseStats",
    "confusion_matrix",
    "default_exclusions",
    "frequency_accuracy_correlation",
    "head_common_tail",
    "imbalance_factors",
    "segmentation_scores",
]
