"""rsseg.losses: segmentation loss and neural-collapse regularizers.

Primitives (pure functions): :func:`simplex_etf`, :func:`labels_to_embedding`,
:func:`class_means`, :func:`inter_class_loss`, :func:`intra_class_loss`,
:func:`center_collapse_loss`, :func:`within_class_loss`, :func:`between_class_loss`.
Modules: :class:`In2NeCT`, :class:`CeCo`, :class:`RegionRebalance`, :class:`NCFeature`
(built from config by :func:`build_regularizers`) and :class:`SegmentationLoss`.
"""

from rsseg.losses.centers import class_means, image_class_means, labels_to_embedding, upsampled_class_sums
from rsseg.losses.collapse_terms import (
    between_class_loss,
    center_collapse_loss,
    centre_means,
    inter_class_loss,
    intra_class_loss,
    within_class_loss,
)
from rsseg.losses.etf import simplex_etf
from rsseg.losses.regularizers import (
    CeCo,
    In2NeCT,
    NCFeature,
    RegionRebalance,
    build_regularizers,
    sample_per_class,
)
from rsseg.losses.seg_loss import SegmentationLoss, median_frequency_weights, soft_dice_loss

__all__ = [
    "CeCo",
    "In2NeCT",
    "NCFeature",
    "RegionRebalance",
    "SegmentationLoss",
    "between_class_loss",
    "build_regularizers",
    "center_collapse_loss",
    "centre_means",
    "class_means",
    "image_class_means",
    "inter_class_loss",
    "intra_class_loss",
    "labels_to_embedding",
    "median_frequency_weights",
    "sample_per_class",
    "simplex_etf",
    "soft_dice_loss",
    "upsampled_class_sums",
    "within_class_loss",
]
