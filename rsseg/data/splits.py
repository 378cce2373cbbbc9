"""Dataset splits: the split names and the deterministic validation hold-out."""

from __future__ import annotations

import random
from collections.abc import Callable

from rsseg.errors import DatasetError

SPLITS = ("train", "val", "test")


def holdout(n: int, fraction: float, seed: int = 0) -> list[int]:
    """Indices (sorted) of the ``max(1, round(fraction * n))`` items held out for validation.

    Deterministic for a given ``n``/``fraction``/``seed`` so every run validates on the same files.
    """
    if n < 2:
        raise DatasetError(
            f"cannot hold out a validation set from {n} training file(s); add more files or a val/ folder "
            "(<root>/val/images + <root>/val/masks)"
        )
    k = min(n - 1, max(1, round(fraction * n)))
    return sorted(random.Random(seed).sample(range(n), k))


def split_holdout[T](items: list[T], split: str, fraction: float) -> list[T]:
    """``val``: the :func:`holdout` items; ``train``: the others."""
    val = set(holdout(len(items), fraction))
    keep: Callable[[int], bool] = (lambda i: i in val) if split == "val" else (lambda i: i not in val)
    return [p for i, p in enumerate(items) if keep(i)]
