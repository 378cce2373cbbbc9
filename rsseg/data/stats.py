"""Dataset statistics: class pixel/region frequencies, imbalance factors, per-band mean/std.

Pixel and region (image-level) class counts feed the class-imbalance diagnostics and the priors of
the neural-collapse regularizers: CeCo (Zhong et al., CVPR 2023) and Region Rebalance (Cui et al.)
both measure imbalance as ``n_max / n_min`` over classes, with ``n`` the number of pixels (pixel
imbalance) or the number of images in which the class appears (region / image-level imbalance);
CeCo's balanced-softmax prior uses the log of the image-level class frequencies
(:func:`log_region_prior`).

Computation streams one file (and one block of rows) at a time, so a folder of 6000 x 6000 tiles
is fine; results are cached as JSON per dataset root in the user cache directory
(:func:`rsseg.io.cache_dir`), keyed by a hash of the file list, sizes, modification times and the settings
that change the numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window
from torch import Tensor

from rsseg.config import DatasetConfig, plain
from rsseg.constants import IGNORE_INDEX
from rsseg.data.raster import TilePair, code_hex, color_distance, decode_codes, read_image
from rsseg.data.tiles import read_mask, read_mask_colors
from rsseg.errors import CacheWarning, InputRasterError, LabelError
from rsseg.io import cache_dir, write_json
from rsseg.progress import ProgressFn

STATS_VERSION = 3
#: rows read per block when streaming a large raster
BLOCK_ROWS = 1024
#: unmatched mask colours kept in the statistics (the commonest)
MAX_UNKNOWN_COLORS = 16
#: above this share of pixels with image data but no label, training refuses (`--allow-ignored`)
IGNORED_LIMIT = 0.5


def imbalance_factor(counts: Sequence[int]) -> float | None:
    """``n_max / n_min`` over classes with ``n > 0`` (CeCo / RR definition); None when no class occurs."""
    present = [c for c in counts if c > 0]
    return max(present) / min(present) if present else None


@dataclass
class DatasetStats:
    """Statistics of one dataset split. Band statistics are in [0, 1] units (raw / scale).

    Attributes:
        pixel_counts: ``[K]`` labelled pixels per class (ignore excluded).
        region_counts: ``[K]`` number of images in which each class appears (image-level counts).
        num_images: images (tiles/files) seen.
        mean, std: ``[C]`` per band over valid pixels (image nodata and ignore-labelled pixels excluded).
        ignored_pixels: pixels labelled ``ignore_index`` (including image nodata).
        unknown_color_pixels: pixels of colour-coded masks whose colour is no class's
            (``dataset.colors``, exact match or within ``dataset.color_tolerance``); they are
            among ``ignored_pixels``.
        unknown_colors: the commonest of those colours, ``#rrggbb`` -> pixels (at most
            :data:`MAX_UNKNOWN_COLORS`, most pixels first).
        data_pixels: pixels with image data in labelled files (image nodata excluded).
        label_ignored_pixels: pixels with image data whose label is ``ignore_index``: what the
            labels themselves leave out (unmatched colours, the masks' own ignore value).
    """

    num_classes: int
    ignore_index: int
    pixel_counts: list[int]
    region_counts: list[int]
    num_images: int
    mean: list[float]
    std: list[float]
    ignored_pixels: int = 0
    band_pixels: int = 0
    classes: list[str] | None = None
    source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    unknown_color_pixels: int = 0
    unknown_colors: dict[str, int] = field(default_factory=dict)
    data_pixels: int = 0
    label_ignored_pixels: int = 0

    @property
    def ignored_share(self) -> float | None:
        """Share of the pixels with image data that carry no label; None when not measured (a
        dataset read through its own datamodule, e.g. ``geo``)."""
        return self.label_ignored_pixels / self.data_pixels if self.data_pixels else None

    @property
    def pixel_imbalance(self) -> float | None:
        return imbalance_factor(self.pixel_counts)

    @property
    def region_imbalance(self) -> float | None:
        return imbalance_factor(self.region_counts)

    @property
    def absent_classes(self) -> list[int]:
        """Classes with no labelled pixel (the imbalance factors leave them out)."""
        return [k for k, n in enumerate(self.pixel_counts) if n == 0]

    @property
    def pixel_frequencies(self) -> list[float]:
        total = sum(self.pixel_counts)
        return [n / total if total else 0.0 for n in self.pixel_counts]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(version=STATS_VERSION, pixel_imbalance=self.pixel_imbalance, region_imbalance=self.region_imbalance,
                 absent_classes=self.absent_classes, pixel_frequencies=self.pixel_frequencies,
                 ignored_share=self.ignored_share)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> DatasetStats:
        d = json.loads(text)
        if d.get("version") != STATS_VERSION:
            raise ValueError(f"stats version {d.get('version')} != {STATS_VERSION}")
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})


class StatsAccumulator:
    """Streaming accumulator: feed blocks of an image with :meth:`add`, then :meth:`end_image`.

    Band moments are merged per block with Chan et al.'s parallel variance formula in float64, so
    a billion-pixel dataset keeps full precision.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, scale: float = 255.0) -> None:
        self.k, self.ignore, self.scale = num_classes, ignore_index, scale
        self.pixels = np.zeros(num_classes, dtype=np.int64)
        self.regions = np.zeros(num_classes, dtype=np.int64)
        self.present = np.zeros(num_classes, dtype=bool)
        self.images = 0
        self.ignored = 0
        self.n = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def add(self, image: np.ndarray | None, mask: np.ndarray | None, valid: np.ndarray | None = None) -> None:
        """One block: raw ``image [C,h,w]`` (or None), labels ``mask [h,w]`` (0..K-1 / ignore, or None)."""
        if mask is not None:
            m = np.asarray(mask).astype(np.int64, copy=False).ravel()
            bad = (m != self.ignore) & ((m < 0) | (m >= self.k))
            if bad.any():
                raise LabelError(f"labels hold values {np.unique(m[bad]).tolist()[:20]} outside 0..{self.k - 1} and not {self.ignore}")
            counts = np.bincount(np.where(m == self.ignore, self.k, m), minlength=self.k + 1)
            self.pixels += counts[: self.k]
            self.present |= counts[: self.k] > 0
            self.ignored += int(counts[self.k])
            keep = m != self.ignore
            valid = keep if valid is None else (valid.ravel() & keep)
        if image is None:
            return
        x = np.asarray(image).reshape(image.shape[0], -1)
        if valid is not None:
            x = x[:, np.asarray(valid).ravel()]
        n = x.shape[1]
        if n == 0:
            return
        x = x.astype(np.float64) / self.scale
        mean = x.mean(axis=1)
        m2 = ((x - mean[:, None]) ** 2).sum(axis=1)
        if self.mean is None:
            self.n, self.mean, self.m2 = n, mean, m2
            return
        total = self.n + n
        delta = mean - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + m2 + delta**2 * self.n * n / total
        self.n = total

    def end_image(self) -> None:
        self.regions += self.present
        self.present[:] = False
        self.images += 1

    def result(self, classes: Sequence[str] | None = None, source: str | None = None) -> DatasetStats:
        mean = [] if self.mean is None else self.mean.tolist()
        std = [] if self.m2 is None else np.sqrt(self.m2 / max(self.n, 1)).tolist()
        return DatasetStats(self.k, self.ignore, self.pixels.tolist(), self.regions.tolist(), self.images, mean, std,
                            self.ignored, self.n, list(classes) if classes else None, source)


def _as_numpy(x: Any) -> np.ndarray | None:
    if x is None:
        return None
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def compute_stats(
    items: Iterable[Any], num_classes: int, ignore_index: int = IGNORE_INDEX, scale: float = 255.0,
    total: int | None = None, on_progress: ProgressFn | None = None,
) -> DatasetStats:
    """Statistics of an iterable of images (or a map-style dataset), one item = one image.

    Args:
        items: ``(image, mask)`` tuples or dicts with ``image`` ``[C,H,W]`` raw values (or None) and
            ``mask`` ``[H,W]`` labels in 0..K-1 / ``ignore_index`` (or None); numpy or torch.
        scale: divisor bringing raw values to [0, 1] for mean/std.
        total: number of items, for ``on_progress`` (default: ``len(items)`` when defined).
        on_progress: called after each image (:data:`rsseg.progress.ProgressFn`; ``total`` 0 when unknown); None is silent.
    """
    acc = StatsAccumulator(num_classes, ignore_index, scale)
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    for done, item in enumerate(items, 1):
        image, mask = (item["image"], item.get("mask")) if isinstance(item, dict) else item
        acc.add(_as_numpy(image), _as_numpy(mask))
        acc.end_image()
        if on_progress is not None:
            on_progress(done, total or 0)
    return acc.result()


def stats_of_pairs(pairs: Sequence[TilePair], num_classes: int, ignore_index: int, scale: float,
                   classes: Sequence[str] | None = None, source: str | None = None,
                   on_progress: ProgressFn | None = None) -> DatasetStats:
    """Streaming statistics over raster pairs, ``BLOCK_ROWS`` rows at a time."""
    acc = StatsAccumulator(num_classes, ignore_index, scale)
    first: tuple[str, np.dtype] | None = None
    unknown = 0
    colors: Counter[int] = Counter()
    data_pixels = label_ignored = 0
    for done, pair in enumerate(pairs, 1):
        unknown_here = 0
        for row in range(0, pair.height, BLOCK_ROWS):
            window = Window(0, row, pair.width, min(BLOCK_ROWS, pair.height - row))
            image, valid = read_image(pair, window)
            first = first or (pair.image, image.dtype)
            if image.dtype != first[1]:
                # one dataset.scale brings every file to [0, 1]: uint16 tiles among uint8 ones would
                # train on values 257 times too large
                raise InputRasterError(
                    f"image {pair.image} holds {image.dtype} pixels but {first[0]} holds {first[1]}; one "
                    f"dataset.scale ({scale:g}) serves every file: convert the images to one data type")
            if pair.mask is None:
                acc.add(image, None)
                continue
            if pair.label_colors:
                codes = read_mask_colors(pair, window)
                mask = decode_codes(codes, pair.label_colors, ignore_index, pair.color_tolerance)
                unmatched = codes[mask == ignore_index]  # before image nodata: each is a colour of no class
                unknown_here += unmatched.size
                values, counts = np.unique(unmatched, return_counts=True)
                colors.update(dict(zip(values.tolist(), counts.tolist(), strict=True)))
            else:
                mask = read_mask(pair, num_classes, ignore_index, window)
            # what the labels leave out where there is imagery (image nodata is no labelling mistake)
            has_data = np.ones(mask.shape, dtype=bool) if valid is None else valid
            data_pixels += int(np.count_nonzero(has_data))
            label_ignored += int(np.count_nonzero(has_data & (mask == ignore_index)))
            if valid is not None:
                mask[~valid] = ignore_index
            acc.add(image, mask)
        if pair.label_colors and unknown_here == pair.width * pair.height:
            # not one pixel in a class colour: an index mask saved as RGB, or another palette
            raise LabelError(
                f"mask {pair.mask} is colour-coded (3 bands) but not one pixel matches dataset.colors "
                f"({', '.join('#{:02x}{:02x}{:02x}'.format(*c) for c in pair.label_colors)}); give the classes' colours in dataset.colors, or set "
                "dataset.mask_encoding: index if the mask holds class indices")
        unknown += unknown_here
        acc.end_image()
        if on_progress is not None:
            on_progress(done, len(pairs))
    stats = acc.result(classes, source)
    stats.unknown_color_pixels = unknown
    stats.unknown_colors = {code_hex(c): n for c, n in colors.most_common(MAX_UNKNOWN_COLORS)}
    stats.data_pixels, stats.label_ignored_pixels = data_pixels, label_ignored
    return stats


def nearest_class(color: str, colors: Sequence[str]) -> tuple[int, int]:
    """``(class index, largest channel difference)`` of the class colour nearest to ``color``
    (the distance ``dataset.color_tolerance`` measures)."""
    distances = [color_distance(color, c) for c in colors]
    best = int(np.argmin(distances))
    return best, distances[best]


def unknown_colors_text(stats: DatasetStats, classes: Sequence[str], colors: Sequence[str], limit: int = 4) -> str:
    """The commonest unmatched mask colours with their pixels and nearest class colour."""
    parts = []
    for color, n in list(stats.unknown_colors.items())[:limit]:
        k, distance = nearest_class(color, colors)
        parts.append(f"{color} {n:,} px (nearest class colour {colors[k]} {classes[k]}, {distance} off)")
    more = len(stats.unknown_colors) - limit
    return ", ".join(parts) + (f" and {more}{'+' if len(stats.unknown_colors) == MAX_UNKNOWN_COLORS else ''} more"
                               if more > 0 else "")


def describe_labels(stats: DatasetStats, classes: Sequence[str], colors: Sequence[str]) -> str | None:
    """One line on what the labels leave out (the ignored share of the pixels with image data and
    the unmatched mask colours), or None when the dataset's reader does not measure it."""
    share = stats.ignored_share
    if share is None:
        return None
    text = (f"{100 * share:.2f} % of the pixels with image data carry no label "
            f"({stats.label_ignored_pixels:,} of {stats.data_pixels:,}; they are ignored)")
    if stats.unknown_color_pixels:
        text += (f"; {stats.unknown_color_pixels:,} mask pixels have a colour that is no class's: "
                 + unknown_colors_text(stats, classes, colors))
    return text


def check_labels(stats: DatasetStats, classes: Sequence[str], colors: Sequence[str], allow_ignored: bool = False) -> None:
    """Refuse training labels that would train silently wrong, unless ``allow_ignored``: a class
    with no pixel while mask pixels have colours no class has (a palette that does not match the
    masks), or more than :data:`IGNORED_LIMIT` of the pixels with image data ignored."""
    if allow_ignored:
        return
    absent = stats.absent_classes
    if absent and stats.unknown_colors:
        names = ", ".join(f"{classes[k]} ({colors[k]})" for k in absent)
        raise LabelError(
            f"no training pixel is labelled {names} while {stats.unknown_color_pixels:,} mask pixels have colours that "
            f"are no class's: {unknown_colors_text(stats, classes, colors)}; give each class the masks' colour in "
            "dataset.colors, set dataset.color_tolerance for anti-aliased masks, or pass --allow-ignored to train "
            "with those pixels ignored")
    share = stats.ignored_share
    if share is not None and share > IGNORED_LIMIT:
        colours = (f", {stats.unknown_color_pixels:,} of them in colours that are no class's: "
                   f"{unknown_colors_text(stats, classes, colors)}" if stats.unknown_color_pixels else "")
        raise LabelError(
            f"{100 * share:.1f} % of the training pixels with image data carry no label ({stats.label_ignored_pixels:,} "
            f"of {stats.data_pixels:,}{colours}), more than {100 * IGNORED_LIMIT:.0f} %; check the masks "
            "(dataset.mask_encoding, dataset.colors, their ignore value), or pass --allow-ignored to train on the "
            "labelled rest")


def _cache_key(pairs: Sequence[TilePair], ds: DatasetConfig, split: str) -> str:
    h = hashlib.sha256()
    # the dataset's own options (e.g. a scene filter, a mask encoding) may change what is read
    h.update(json.dumps([STATS_VERSION, ds.name, split, plain(ds.extra), ds.bands, ds.scale, ds.ignore_index,
                         len(ds.classes), ds.val_fraction, ds.colors]).encode())
    for p in pairs:
        h.update(f"{p.image}|{p.mask}|{p.band_indexes}|{p.dataset}|{p.label_colors}".encode())
        for f in (p.image, p.mask):
            # a zip member changes only when its archive does
            real = f[len("/vsizip/"):].split(".zip/", 1)[0] + ".zip" if f and f.startswith("/vsizip/") else f
            if real and os.path.exists(real):
                st = os.stat(real)
                h.update(f"{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def cache_path(root: str | Path, key: str) -> Path:
    """The stats cache file of a dataset root: in the user cache, never inside the data folder
    (shared data is read-only, and a repository's sample folder should stay clean)."""
    root = Path(root).resolve()
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:8]
    return cache_dir() / f"stats_{root.name}_{digest}_{key}.json"


def _write_cache(path: Path, stats: DatasetStats) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, stats.to_dict())  # atomic: a concurrent reader never sees half a file
    except OSError as exc:
        warnings.warn(f"could not cache dataset statistics at {path}: {exc}", CacheWarning, stacklevel=2)


def split_stats(ds: DatasetConfig, split: str, pairs: Sequence[TilePair], use_cache: bool = True,
                on_progress: ProgressFn | None = None) -> DatasetStats:
    """Statistics of the ``pairs`` of one split of a resolved dataset config, cached (see module
    docstring). ``on_progress`` (:data:`rsseg.progress.ProgressFn`) is called per file only when computing."""
    key = _cache_key(pairs, ds, split)
    path = cache_path(ds.root or ".", key)
    if use_cache and path.is_file():
        try:
            return DatasetStats.from_json(path.read_text())
        except (ValueError, TypeError, KeyError):
            pass  # stale or corrupt cache: recompute
    stats = stats_of_pairs(pairs, len(ds.classes), ds.ignore_index, ds.scale, ds.classes, f"{ds.root}:{split}",
                           on_progress)
    _write_cache(path, stats)
    return stats


def log_region_prior(stats: DatasetStats) -> Tensor:
    """``[K]`` log image-level class frequencies of a split, the prior of CeCo's balanced-softmax
    center logits and of Region Rebalance (add-one smoothed: see
    :func:`log_prior_from_counts`)."""
    if stats.num_images == 0:
        raise LabelError("region counts are empty: compute statistics on a labelled split")
    return log_prior_from_counts(stats.region_counts)


def log_prior_from_counts(counts: Tensor | list[float]) -> Tensor:
    """Log class frequencies ``log((F(k) + 1) / sum_j (F(j) + 1))`` for a balanced softmax.

    ``counts [K]`` are e.g. RR's region frequencies F(k) (number of training images holding class
    k, RR Eq. 7). The +1 (Laplace smoothing) keeps a class never seen in training finite.
    """
    c = torch.as_tensor(counts, dtype=torch.float64).clamp_min(0) + 1.0
    return torch.log(c / c.sum()).float()
