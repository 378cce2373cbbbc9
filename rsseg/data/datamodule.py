"""The LightningDataModule every dataset goes through (LoveDA, ISPRS Potsdam/Vaihingen, folders).

TorchGeo's dataset classes are not used for reading: its ISPRS loaders read 6000 x 6000 tiles
whole, map unknown label colours to clutter instead of ignore, and extract the archives into the
(possibly read-only) root; rsseg reads windows straight from the files or zips instead, using
TorchGeo's split lists and its LoveDA downloader.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from rsseg.config import Config, DatasetConfig
from rsseg.data.augment import augment_batch
from rsseg.data.normalize import Normalizer, imagenet_stats
from rsseg.data.raster import TilePair
from rsseg.data.stats import DatasetStats, split_stats
from rsseg.data.tiles import GridPatchDataset, RandomPatchDataset, iter_tiles
from rsseg.errors import ConfigError, DatasetNotFoundError
from rsseg.io import open_raster
from rsseg.progress import ProgressFn


def _gsd_from_file(path: str) -> float | None:
    """Pixel size in metres from a raster's georeferencing (None without a CRS)."""
    with open_raster(path, "dataset image") as src:
        crs, t, bounds = src.crs, src.transform, src.bounds
    if crs is None or t.is_identity:
        return None
    if crs.is_geographic:
        lat = math.radians((bounds.top + bounds.bottom) / 2)
        return abs(t.a) * 111_320.0 * math.cos(lat)  # metres per degree of longitude at the centre
    return abs(t.a) * crs.linear_units_factor[1]


#: ``(resolved dataset config, split, download) -> pairs``: the dataset's
#: :meth:`~rsseg.data.datasets.DatasetSpec.find_pairs`, handed down by the spec that builds the datamodule
FindPairs = Callable[[DatasetConfig, str, bool], list[TilePair]]


class RsSegDataModule(L.LightningDataModule):
    """Train/val loaders of fixed-size patches plus whole tiles for evaluation.

    Batches: ``{"image": float32 [B,C,H,W] normalised, "mask": int64 [B,H,W]}`` with 255 = ignore.
    Training batches are augmented on the device in :meth:`on_after_batch_transfer`
    (``crop_size`` crops); validation batches are ``patch_size`` grid windows.

    Randomness has its own generators seeded from ``optim.seed`` (and the DDP rank): the shuffle
    order, the training windows and the augmentation, so two runs with one seed see identical
    batches whatever the model or its regularizers draw from torch's global RNG.

    ``patch_size`` = ``crop_size / min(scales)`` (so the smallest scale still sees a full crop's
    worth of context), capped at the largest tile side and rounded up to a multiple of 32.

    ``cfg.dataset`` is resolved (:meth:`DatasetSpec.resolve`); ``find_pairs`` lists a split's files.
    """

    def __init__(self, cfg: Config, find_pairs: FindPairs, download: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.ds = copy.deepcopy(cfg.dataset)
        self.find_pairs = find_pairs
        self.download = download
        self.classes: list[str] = list(self.ds.classes)
        self.colors: list[str] = list(self.ds.colors)
        self.bands: list[str] = list(self.ds.bands)
        self.scale: float = self.ds.scale
        self.ignore_index: int = self.ds.ignore_index
        self.batch_size = cfg.optim.batch_size
        self.crop_size = cfg.optim.crop_size
        self.scales = list(cfg.optim.scales)
        if not self.scales or min(self.scales) <= 0:
            raise ConfigError("config key 'optim.scales' must list positive scale factors, e.g. [0.5, 1.0, 1.5]")
        self._pairs: dict[str, list[TilePair]] = {}
        self._stats: DatasetStats | None = None
        self._norm: tuple[list[float], list[float]] | None = None
        self.seed = cfg.optim.seed
        self._augment_generator: torch.Generator | None = None
        self.train_dataset: RandomPatchDataset | None = None
        self.val_dataset: GridPatchDataset | None = None

    # ------------------------------------------------------------------ metadata
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def pairs(self, split: str) -> list[TilePair]:
        """Raster pairs of a split (found once, then remembered)."""
        if split not in self._pairs:
            self._pairs[split] = self.find_pairs(self.ds, split, self.download)
        return self._pairs[split]

    def input_files(self, split: str) -> list[tuple[str, tuple[int, ...]]]:
        """``(image raster, 1-based bands the model reads)`` of ``split``: where the input contract
        (:func:`rsseg.inference.contract.measure_training_input`) samples the raw values."""
        return [(p.image, p.band_indexes) for p in self.pairs(split)]

    def input_samples(self, split: str) -> Iterator[np.ndarray]:
        """Raw images ``[C, H, W]`` of ``split`` for the input contract where :meth:`input_files` names
        none (a datamodule that hides its files overrides this); files are measured instead."""
        return iter(())

    def split_stats(self, split: str, use_cache: bool = True,
                    on_progress: ProgressFn | None = None) -> DatasetStats:
        """Class and band statistics of ``split`` (cached on disk); ``on_progress`` counts files."""
        return split_stats(self.ds, split, self.pairs(split), use_cache, on_progress)

    @property
    def stats(self) -> DatasetStats:
        """Statistics of the training split (computed on first use)."""
        if self._stats is None:
            self._stats = self.split_stats("train")
        return self._stats

    def _normalization(self) -> tuple[list[float], list[float]]:
        if self._norm is None:
            mode, n = self.ds.normalization, len(self.bands)
            if mode == "custom":
                mean, std = list(self.ds.mean or []), list(self.ds.std or [])
            elif mode == "stats":
                mean, std = list(self.stats.mean), list(self.stats.std)
                std = [max(s, 1e-6) for s in std]  # a constant band must not divide by zero
            else:
                mean, std = imagenet_stats(n)
            self._norm = (mean, std)
        return self._norm

    @property
    def mean(self) -> list[float]:
        return self._normalization()[0]

    @property
    def std(self) -> list[float]:
        return self._normalization()[1]

    @property
    def gsd(self) -> float | None:
        """Ground sample distance in metres: config, dataset default, or the first training file."""
        if self.ds.gsd is None:
            self.ds.gsd = _gsd_from_file(self.pairs("train")[0].image)
        return self.ds.gsd

    @property
    def patch_size(self) -> int:
        biggest = max(max(p.height, p.width) for p in self.pairs("train"))
        size = min(math.ceil(self.crop_size / min(self.scales)), max(biggest, self.crop_size))
        return 32 * math.ceil(size / 32)

    def normalizer(self) -> Normalizer:
        return Normalizer(self.mean, self.std, self.scale)

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        if self.download:
            self.pairs("train")

    def _generator(self, stream: int) -> torch.Generator:
        """A CPU generator of its own for one random stream, seeded by (seed, stream, DDP rank)."""
        trainer = getattr(self, "trainer", None)
        rank = trainer.global_rank if trainer is not None else 0
        return torch.Generator().manual_seed(self.seed + 1000 * rank + stream)

    def setup(self, stage: str | None = None) -> None:
        args = (self.patch_size, self.normalizer(), self.num_classes, self.ignore_index)
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = RandomPatchDataset(self.pairs("train"), *args, generator=self._generator(1))
            self._augment_generator = self._generator(2)
        if stage in (None, "fit", "validate") and self.val_dataset is None:
            self.val_dataset = GridPatchDataset(self.pairs("val"), *args)

    def _loader(self, dataset: Any, shuffle: bool) -> DataLoader:
        workers = self.ds.num_workers
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=workers,
                          generator=self._generator(0) if shuffle else None,
                          drop_last=shuffle and len(dataset) > self.batch_size,
                          persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        return self._loader(self.train_dataset, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        return self._loader(self.val_dataset, shuffle=False)

    def augment(self, batch: dict[str, Any]) -> dict[str, Any]:
        """In2NeCT training augmentation of a batch (see :func:`rsseg.data.augment.augment_batch`)."""
        if self._augment_generator is None:
            self._augment_generator = self._generator(2)
        image, mask = augment_batch(batch["image"], batch["mask"], self.crop_size, self.scales, self.ignore_index,
                                    generator=self._augment_generator)
        return {**batch, "image": image, "mask": mask}

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.training:
            return self.augment(batch)
        return batch

    # ------------------------------------------------------------------ evaluation
    def eval_tiles(self, split: str) -> Iterator[dict]:
        """Whole tiles of ``split`` (``val`` or ``test``; eroded labels when configured) for
        sliding-window evaluation: ``{"image": [C,H,W] float normalised, "mask": [H,W] int64, "name"}``."""
        pairs = self.pairs(split)
        if pairs and pairs[0].mask is None:
            raise DatasetNotFoundError(f"the {split} split of {self.ds.name} has no labels (LoveDA Test masks are withheld); evaluate on val")
        return iter_tiles(pairs, self.normalizer(), self.num_classes, self.ignore_index)

