"""k-fold splits of whole tiles for cross-validation.

Tiles, not pixels or crops, are the unit: neighbouring pixels of one tile are correlated, so a tile
is either in a fold's validation set or in its training set, never both.
"""

from __future__ import annotations

from collections.abc import Sequence


def kfold_split(names: Sequence[str], k: int, strata: Sequence[Sequence[float]] | None = None) -> list[list[str]]:
    """Assign every name to exactly one of ``k`` folds, spreading the rare classes across folds.

    Names are ranked by ``strata`` (one key per name, e.g. the pixel shares of the rarest classes,
    compared as tuples, largest first; ties and no strata: by name) and dealt in snake order
    (0, 1, ..., k-1, k-1, ..., 0, ...), so tiles rich in a rare class land in different folds and
    fold sizes differ by at most one. Deterministic: the same inputs give the same folds.

    Returns ``k`` lists of names, each sorted.
    """
    if k < 2:
        raise ValueError(f"k-fold cross-validation needs k >= 2, got {k}")
    if len(names) < k:
        raise ValueError(f"{len(names)} tiles cannot fill {k} folds")
    if len(set(names)) != len(names):
        raise ValueError("tile names must be unique")
    if strata is not None and len(strata) != len(names):
        raise ValueError(f"{len(strata)} strata keys for {len(names)} tiles")
    keys = [tuple(-float(v) for v in strata[i]) if strata is not None else () for i in range(len(names))]
    order = sorted(range(len(names)), key=lambda i: (keys[i], names[i]))
    folds: list[list[str]] = [[] for _ in range(k)]
    for rank, i in enumerate(order):
        lap, pos = divmod(rank, k)
        folds[pos if lap % 2 == 0 else k - 1 - pos].append(names[i])
    return [sorted(f) for f in folds]
