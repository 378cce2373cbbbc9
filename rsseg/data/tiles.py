"""Reading image/label pairs, and map-style datasets over them: random training patches, a
validation grid, whole tiles.

Every sample has one fixed size ``P x P`` (``patch_size``) so the default collate can stack a batch
of tiles of any sizes: a tile larger than P gives random (training) or grid (validation) windows,
a smaller one is padded (image 0 after normalisation, mask ``ignore_index``). Training then applies
random scale/crop/flip/rotate on the whole batch (``rsseg.data.augment``), on the device.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from rasterio.windows import Window
from torch import Tensor
from torch.utils.data import Dataset

from rsseg.constants import IGNORE_INDEX
from rsseg.data.normalize import Normalizer
from rsseg.data.raster import TilePair, decode_codes, read_color_codes, read_image, read_index_labels, read_pixels
from rsseg.io import open_raster


def read_mask(pair: TilePair, num_classes: int, ignore_index: int, window: Window | None = None) -> np.ndarray:
    """Labels ``[h, w]`` uint8 in rsseg's encoding (classes 0..K-1, ``ignore_index``): colour-coded
    masks through ``pair.label_colors``, others by ``pair.decoder`` (index-coded without one)."""
    if pair.mask is None:
        raise ValueError(f"{pair.name} has no mask")
    if pair.label_colors:
        return decode_codes(read_mask_colors(pair, window), pair.label_colors, ignore_index, pair.color_tolerance)
    decode = pair.decoder or read_index_labels
    with open_raster(pair.mask, "dataset label") as src:
        return read_pixels(src, "dataset label", lambda: decode(src, window, num_classes, ignore_index))


def read_mask_colors(pair: TilePair, window: Window | None = None) -> np.ndarray:
    """The colour of each pixel ``[h, w]`` of a colour-coded mask as a 24-bit code
    (:func:`rsseg.data.raster.read_color_codes`): what the statistics count unmatched colours in."""
    if pair.mask is None:
        raise ValueError(f"{pair.name} has no mask")
    with open_raster(pair.mask, "dataset label") as src:
        return read_pixels(src, "dataset label", lambda: read_color_codes(src, window))


def read_pair(
    pair: TilePair, num_classes: int, ignore_index: int, window: Window | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw image ``[C, h, w]`` and labels ``[h, w]`` (None without a mask); image nodata -> ignore."""
    image, valid = read_image(pair, window)
    if pair.mask is None:
        return image, None
    mask = read_mask(pair, num_classes, ignore_index, window)
    if valid is not None:
        mask[~valid] = ignore_index
    return image, mask


def grid_starts(length: int, patch: int) -> list[int]:
    """Window starts covering ``length`` with ``patch``-wide windows, the last flush with the end."""
    if length <= patch:
        return [0]
    starts = list(range(0, length - patch, patch))
    return starts + [length - patch]


class _PairDataset(Dataset):
    def __init__(self, pairs: Sequence[TilePair], patch_size: int, normalizer: Normalizer, num_classes: int,
                 ignore_index: int = IGNORE_INDEX) -> None:
        self.pairs = list(pairs)
        self.patch = patch_size
        self.norm = normalizer
        self.k = num_classes
        self.ignore = ignore_index

    def _sample(self, pair: TilePair, y: int, x: int) -> dict[str, Tensor]:
        """Window at (y, x) of a pair, padded to ``patch x patch``: image ``[C,P,P]``, mask ``[P,P]``."""
        h, w = min(self.patch, pair.height - y), min(self.patch, pair.width - x)
        raw, mask = read_pair(pair, self.k, self.ignore, Window(x, y, w, h))
        image = np.zeros((raw.shape[0], self.patch, self.patch), dtype=np.float32)
        image[:, :h, :w] = self.norm(raw)
        labels = np.full((self.patch, self.patch), self.ignore, dtype=np.int64)
        if mask is not None:
            labels[:h, :w] = mask
        return {"image": torch.from_numpy(image), "mask": torch.from_numpy(labels)}


class RandomPatchDataset(_PairDataset):
    """Training samples: a random ``P x P`` window of a tile per item.

    An epoch has as many items as the non-overlapping grid has windows, so it covers about the
    training area once whatever the tile sizes; item ``i`` belongs to tile ``i``'s share of that grid.

    ``generator``: the window positions' own CPU generator in the main process (paired runs see
    the same windows whatever else draws random numbers); in DataLoader workers torch's RNG,
    which the loader seeds per worker from its own generator.
    """

    def __init__(self, *args, generator: torch.Generator | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        counts = [math.ceil(p.height / self.patch) * math.ceil(p.width / self.patch) for p in self.pairs]
        self.offsets = np.cumsum([0] + counts)
        self.generator = generator

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        pair = self.pairs[int(np.searchsorted(self.offsets, index, side="right") - 1)]
        gen = self.generator if torch.utils.data.get_worker_info() is None else None
        y = int(torch.randint(0, max(pair.height - self.patch, 0) + 1, (1,), generator=gen))
        x = int(torch.randint(0, max(pair.width - self.patch, 0) + 1, (1,), generator=gen))
        return self._sample(pair, y, x)


class GridPatchDataset(_PairDataset):
    """Validation samples: every window of a regular ``P x P`` grid over every tile (deterministic)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.windows = [(i, y, x) for i, p in enumerate(self.pairs)
                        for y in grid_starts(p.height, self.patch) for x in grid_starts(p.width, self.patch)]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        i, y, x = self.windows[index]
        return self._sample(self.pairs[i], y, x)


def iter_tiles(pairs: Sequence[TilePair], normalizer: Normalizer, num_classes: int,
               ignore_index: int = IGNORE_INDEX) -> Iterator[dict]:
    """Whole tiles for sliding-window evaluation: ``image [C,H,W]`` float normalised, ``mask [H,W]``
    int64 (all ``ignore_index`` when the split has no labels), ``name``."""
    for pair in pairs:
        raw, mask = read_pair(pair, num_classes, ignore_index)
        labels = (torch.from_numpy(mask.astype(np.int64)) if mask is not None
                  else torch.full((pair.height, pair.width), ignore_index, dtype=torch.int64))
        yield {"image": torch.from_numpy(normalizer(raw)), "mask": labels, "name": pair.name}
