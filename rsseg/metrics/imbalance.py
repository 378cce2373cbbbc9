"""Class-imbalance summaries: imbalance factors (CeCo Appendix C, RR Sec. 3.3.2) and the Pearson
correlation between per-class accuracy and class frequency (CeCo Appendix C, RR Table 2)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from rsseg.errors import DatasetError


def _factor(counts: Sequence[float], what: str) -> float:
    c = np.asarray(counts, dtype=np.float64).reshape(-1)
    if c.size == 0 or np.any(c < 0) or not np.all(np.isfinite(c)):
        raise DatasetError(f"{what} counts must be a non-empty list of non-negative numbers, got {list(c)}")
    seen = c[c > 0]
    if seen.size == 0:
        raise DatasetError(f"{what} counts are all zero: no class was seen")
    return float(seen.max() / seen.min())


def imbalance_factors(
    pixel_counts: Sequence[float],
    region_counts: Sequence[float],
    center_counts: Sequence[float] | None = None,
) -> dict[str, float]:
    """Imbalance factor ``n_max / n_min`` of pixel, region (image-level) and center counts.

    Classes with a zero count are left out (their factor would be infinite and say nothing about
    the classes that do occur); each list has one count per class.
    """
    out = {"pixel": _factor(pixel_counts, "pixel"), "region": _factor(region_counts, "region")}
    if center_counts is not None:
        out["center"] = _factor(center_counts, "center")
    return out


def frequency_accuracy_correlation(per_class_acc: Sequence[float], freq: Sequence[float]) -> float:
    """Pearson correlation between per-class accuracy and class frequency.

    Classes whose accuracy is NaN (absent from the evaluation) are left out; NaN when fewer than
    two classes remain or either side is constant (the coefficient is undefined).
    """
    a = np.asarray(per_class_acc, dtype=np.float64).reshape(-1)
    f = np.asarray(freq, dtype=np.float64).reshape(-1)
    if a.shape != f.shape:
        raise DatasetError(f"per-class accuracy has {a.size} entries but frequency has {f.size}: one per class")
    keep = ~(np.isnan(a) | np.isnan(f))
    a, f = a[keep], f[keep]
    if a.size < 2:
        return math.nan
    da, df = a - a.mean(), f - f.mean()
    denom = math.sqrt(float((da * da).sum() * (df * df).sum()))
    return float((da * df).sum() / denom) if denom > 0 else math.nan
