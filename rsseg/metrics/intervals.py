"""Bootstrap confidence intervals for study results (percentile bootstrap, Efron and Tibshirani 1993)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bootstrap_ci(
    values: Sequence[float], level: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` and its percentile-bootstrap interval.

    ``values`` are independent units (e.g. one paired difference per fold x seed); each of
    ``resamples`` draws ``len(values)`` units with replacement and takes their mean; the interval is
    the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of those means. NaN units are left out
    (a class absent from a fold has no IoU); all NaN gives NaN. Deterministic for a given ``seed``.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return (float("nan"),) * 3
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(resamples, v.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(v.mean()), float(low), float(high)
