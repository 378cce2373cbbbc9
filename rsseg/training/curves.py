"""Training curves: ``curves.png`` in the run directory, drawn from the CSV log.

One figure of four panels per epoch: losses (training loss averaged over the epoch's steps,
validation loss), the mean scores (mIoU, mF1, OA in percent), per-class IoU (percent), and the
neural-collapse diagnostics measured on the validation embedding (NC1 and the geometry terms of
:class:`rsseg.metrics.CollapseStats`). A resumed run logs into a new ``logs/version_N``; the
versions are read in order and a later one wins for an epoch both hold.
"""

from __future__ import annotations

import csv
import math
import re
from collections import defaultdict
from pathlib import Path

from rsseg.io import atomic_path

#: validation keys that are scores (percent) rather than collapse diagnostics
_SCORES = ("val/mIoU", "val/mF1", "val/OA")
_PER_CLASS = re.compile(r"^val/(IoU|F1|precision|recall)/")


def read_epoch_metrics(run_dir: str | Path) -> dict[int, dict[str, float]]:
    """``{epoch: {key: value}}`` from ``run_dir/logs/version_*/metrics.csv`` (Lightning's CSVLogger);
    a key logged at several steps of an epoch (training loss) is averaged over them."""
    versions = sorted(Path(run_dir).glob("logs/version_*/metrics.csv"),
                      key=lambda p: int(p.parent.name.rsplit("_", 1)[1]) if p.parent.name.rsplit("_", 1)[1].isdigit() else -1)
    epochs: dict[int, dict[str, float]] = {}
    for path in versions:
        sums: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                if not row.get("epoch"):
                    continue
                epoch = int(float(row["epoch"]))
                for key, value in row.items():
                    if key in ("epoch", "step") or not value or key.startswith("lr-"):
                        continue
                    sums[epoch][key].append(float(value))
        for epoch, keys in sums.items():
            epochs[epoch] = {k: sum(v) / len(v) for k, v in keys.items()}
    return dict(sorted(epochs.items()))


def _series(epochs: dict[int, dict[str, float]], key: str) -> tuple[list[int], list[float]]:
    xs = [e for e, m in epochs.items() if key in m and math.isfinite(m[key])]
    return xs, [epochs[e][key] for e in xs]


def write_curves(run_dir: str | Path, path: str | Path | None = None) -> Path | None:
    """Draw ``curves.png`` (or ``path``) from the run's CSV log; None when no epoch was logged yet.

    Written atomically, so an interrupted write never leaves half a PNG.
    """
    import matplotlib

    matplotlib.use("Agg")  # headless: a training node has no display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = read_epoch_metrics(run_dir)
    if not epochs:
        return None
    keys = sorted({k for m in epochs.values() for k in m})
    collapse = [k for k in keys if k.startswith("val/") and k != "val/loss" and k not in _SCORES
                and not _PER_CLASS.match(k)]
    # (title, [(key, legend label)], factor, log scale)
    panels = [
        ("loss", [(k, k.split("/")[0]) for k in ("train/loss", "val/loss") if k in keys], 1.0, False),
        ("scores (%)", [(k, k.split("/", 1)[1]) for k in _SCORES if k in keys], 100.0, False),
        ("per-class IoU (%)", [(k, k.split("/", 2)[2]) for k in keys if k.startswith("val/IoU/")], 100.0, False),
        ("NC1 (within / between class)", [(k, "NC1") for k in collapse if k == "val/NC1"], 1.0, True),
        ("collapse geometry", [(k, k.split("/", 1)[1]) for k in collapse if k != "val/NC1"], 1.0, False),
    ]
    panels = [p for p in panels if p[1]]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, (title, series, factor, log_scale) in zip(axes[0], panels, strict=True):
        for key, label in series:
            xs, ys = _series(epochs, key)
            ax.plot(xs, [factor * y for y in ys], marker="o", markersize=3, label=label)
        if log_scale and all(y > 0 for key, _ in series for y in _series(epochs, key)[1]):
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2 if len(series) > 6 else 1)
    fig.tight_layout()
    target = Path(path) if path is not None else Path(run_dir) / "curves.png"
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return target
