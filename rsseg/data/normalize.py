"""The one pixel normalisation of rsseg, shared by training (datasets) and inference (predictor).

Raw pixels ``[C, h, w]`` become ``(raw / scale - mean) / std`` per band, with ``mean``/``std`` in
[0, 1] units. A checkpoint stores ``scale``, ``mean`` and ``std`` (:class:`rsseg.checkpoint.ModelMeta`),
so a model sees at inference exactly the numbers it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: ImageNet statistics in [0, 1] units, RGB order (the statistics of timm's pretrained encoders).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: used for bands beyond the first three under ``normalization: imagenet`` (e.g. NIR): a pretrained
#: RGB stem has no statistics for them, and 0.5 / 0.25 maps [0, 1] reflectance to about [-2, 2].
EXTRA_BAND_MEAN = 0.5
EXTRA_BAND_STD = 0.25


def imagenet_stats(num_bands: int) -> tuple[list[float], list[float]]:
    """``(mean, std)`` for ``num_bands`` bands: ImageNet's RGB statistics position by position for
    the first three, :data:`EXTRA_BAND_MEAN` / :data:`EXTRA_BAND_STD` for the rest."""
    mean = [IMAGENET_MEAN[i] if i < 3 else EXTRA_BAND_MEAN for i in range(num_bands)]
    std = [IMAGENET_STD[i] if i < 3 else EXTRA_BAND_STD for i in range(num_bands)]
    return mean, std


class Normalizer:
    """``(raw / scale - mean) / std`` per band, as float32 ``[C, h, w]``.

    Computed as one multiply-add, ``raw * gain - shift`` with ``gain = 1 / (scale * std)`` and
    ``shift = mean / std``, into a single float32 array (the literal expression allocates three).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], scale: float) -> None:
        if len(mean) != len(std):
            raise ValueError(f"normalisation has {len(mean)} means but {len(std)} stds")
        mean_ = np.asarray(mean, dtype=np.float32)[:, None, None]
        std_ = np.asarray(std, dtype=np.float32)[:, None, None]
        self.gain = (1.0 / (np.float32(scale) * std_)).astype(np.float32)
        self.shift = (mean_ / std_).astype(np.float32)

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        out = raw.astype(np.float32)  # always a copy: the caller's array is never modified
        out *= self.gain
        out -= self.shift
        return out
