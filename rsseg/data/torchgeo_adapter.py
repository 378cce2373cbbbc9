"""Any TorchGeo segmentation datamodule, by class path and init arguments, behind rsseg's batch contract.

``dataset.name: torchgeo`` instantiates ``dataset.torchgeo.class_path`` with ``init_args`` the way
LightningCLI does (e.g. ``torchgeo.datamodules.LoveDADataModule`` with ``root``, ``scene`` and
``batch_size``), and uses its datasets, samplers, collation and loaders as they are. What it
replaces is the batch transform: TorchGeo datamodules normalise (and some crop) in their own
``on_after_batch_transfer``; here each batch is instead mapped to rsseg's contract

    ``{"image": float32 [B,C,H,W] = (raw / scale - mean) / std, "mask": int64 [B,H,W]}``

with the config's ``scale`` and normalisation, mask values mapped through ``label_map`` (raw value
-> class index, 255 = ignore; LoveDA's raw 0 is no-data), then augmented by rsseg in training
(scale/crop/flip/rotate to ``crop_size``). Class names and colours come from the config, so the
checkpoint carries them as for every other dataset.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from rsseg.config import Config
from rsseg.data.datamodule import FindPairs, RsSegDataModule
from rsseg.data.stats import DatasetStats, StatsAccumulator
from rsseg.errors import ConfigError, DatasetError

#: splits and the TorchGeo ``setup`` stage that creates each one's dataset
_STAGES = {"train": "fit", "val": "fit", "test": "test"}


def instantiate(class_path: str, init_args: dict[str, Any]) -> L.LightningDataModule:
    """``class_path(**init_args)`` as LightningCLI would, with one-line errors for a wrong path or argument."""
    module_name, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        raise ConfigError(f"cannot import {class_path!r} (config key 'dataset.torchgeo.class_path'); "
                         "give a full path such as torchgeo.datamodules.LoveDADataModule") from None
    if not (isinstance(cls, type) and issubclass(cls, L.LightningDataModule)):
        raise ConfigError(f"{class_path} is not a LightningDataModule (config key 'dataset.torchgeo.class_path')")
    try:
        return cls(**init_args)
    except TypeError as exc:
        raise ConfigError(f"{class_path} does not accept init_args {sorted(init_args)}: {exc}") from None


class TorchGeoAdapterDataModule(RsSegDataModule):
    """The :class:`RsSegDataModule` interface over a wrapped TorchGeo datamodule (``self.inner``).

    ``dataset.root``, when set, is passed as ``root``; ``batch_size`` and ``num_workers`` default to
    ``optim.batch_size`` and ``dataset.num_workers`` unless ``init_args`` sets them.
    """

    def __init__(self, cfg: Config, find_pairs: FindPairs, download: bool = False) -> None:
        super().__init__(cfg, find_pairs, download)
        spec = self.ds.torchgeo
        args = dict(spec.init_args)
        if self.ds.root is not None:
            args["root"] = self.ds.root
        args.setdefault("batch_size", cfg.optim.batch_size)
        args.setdefault("num_workers", self.ds.num_workers)
        if download:
            args.setdefault("download", True)
        self.class_path = str(spec.class_path)
        self.inner = instantiate(self.class_path, args)
        self.label_map = None if spec.label_map is None else torch.tensor(spec.label_map, dtype=torch.int64)
        self._stages: set[str] = set()

    # ------------------------------------------------------------------ the batch contract
    def to_contract(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """A TorchGeo batch (raw ``image [B,C,H,W]``, ``mask [B,H,W]`` or ``[B,1,H,W]``) in rsseg's encoding."""
        if "mask" not in batch:
            raise DatasetError(f"{self.class_path} gives no 'mask' in its samples: it is not a segmentation datamodule")
        return {"image": self.map_image(batch["image"]), "mask": self.map_mask(batch["mask"])}

    def map_image(self, image: Tensor) -> Tensor:
        """Raw ``[B,C,H,W]`` -> ``(raw / scale - mean) / std`` float32."""
        if image.ndim != 4 or image.shape[1] != len(self.bands):
            raise DatasetError(f"{self.class_path} gives images of shape {tuple(image.shape)}; rsseg expects [B, C, H, W] "
                             f"with C = {len(self.bands)} bands (config key 'dataset.bands')")
        mean = torch.tensor(self.mean, dtype=torch.float32, device=image.device)[:, None, None]
        std = torch.tensor(self.std, dtype=torch.float32, device=image.device)[:, None, None]
        return (image.float() / self.scale - mean) / std

    def map_mask(self, mask: Tensor) -> Tensor:
        """Raw mask ``[B,H,W]`` (or ``[B,1,H,W]``) -> int64 class indices, ``ignore_index`` elsewhere."""
        mask = mask.long()
        if mask.ndim == 4 and mask.shape[1] == 1:
            mask = mask[:, 0]
        if self.label_map is not None:
            lut = self.label_map.to(mask.device)
            known = (mask >= 0) & (mask < len(lut))
            return torch.where(known, lut[mask.clamp(0, len(lut) - 1)], self.ignore_index)
        bad = (mask != self.ignore_index) & ((mask < 0) | (mask >= self.num_classes))
        if bool(bad.any()):
            raise DatasetError(f"{self.class_path} masks hold values {mask[bad].unique().tolist()[:10]} outside the "
                             f"{self.num_classes} classes; set 'dataset.torchgeo.label_map' (raw value -> class, 255 ignore)")
        return mask

    # ------------------------------------------------------------------ metadata
    def pairs(self, split: str) -> list:
        raise DatasetError("a torchgeo dataset has no image/mask file pairs; its datamodule reads the data")

    def input_files(self, split: str) -> list[tuple[str, tuple[int, ...]]]:
        return []  # the wrapped datamodule hides its files: the contract is measured on its samples

    def input_samples(self, split: str) -> Iterator[np.ndarray]:
        """The wrapped datamodule's raw ``split`` images ``[C, H, W]``, as the model is trained on them."""
        for batch in self._split_loader(split):
            for image in batch["image"]:
                yield image.numpy()

    def _split_loader(self, split: str) -> DataLoader:
        stage = _STAGES.get(split)
        if stage is None:
            raise ConfigError(f"unknown split {split!r} for {self.class_path}; use train, val or test")
        if stage not in self._stages:
            try:
                self.inner.setup(stage)
            except FileNotFoundError as exc:  # TorchGeo's DatasetNotFoundError
                raise DatasetError(f"{self.class_path}: {exc}".splitlines()[0]) from None
            self._stages.add(stage)
        try:
            return getattr(self.inner, f"{split}_dataloader")()
        except Exception as exc:  # MisconfigurationException: the datamodule defines no such split
            raise DatasetError(f"{self.class_path} has no {split} split: {exc}") from None

    def split_stats(self, split: str, use_cache: bool = False, on_progress: object = None) -> DatasetStats:
        # batches of the wrapped datamodule, not files: nothing to count for on_progress
        """Statistics of the wrapped datamodule's ``split`` samples (one sample = one image); not
        cached (``use_cache`` is accepted for the common interface): what a datamodule reads is its own."""
        acc = StatsAccumulator(self.num_classes, self.ignore_index, self.scale)
        loader = self._split_loader(split)
        if loader.drop_last:  # TorchGeo drops the last partial training batch; statistics count every sample
            loader = DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=loader.sampler,
                                collate_fn=loader.collate_fn, num_workers=loader.num_workers)
        for batch in loader:
            masks = self.map_mask(batch["mask"])
            for image, mask in zip(batch["image"], masks, strict=True):
                acc.add(image.numpy(), mask.numpy())
                acc.end_image()
        return acc.result(self.classes, f"{self.class_path}:{split}")

    @property
    def gsd(self) -> float | None:
        return self.ds.gsd

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        self.inner.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        pass  # the wrapped datamodule is set up on first use of each split (see _loader)

    def train_dataloader(self) -> DataLoader:
        return self._split_loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._split_loader("val")

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        return super().on_after_batch_transfer(self.to_contract(batch), dataloader_idx)

    def eval_tiles(self, split: str) -> Iterator[dict]:
        """Every sample of ``split`` whole: ``{"image": [C,H,W] normalised, "mask": [H,W], "name"}``."""
        n = 0
        for batch in self._split_loader(split):
            out = self.to_contract(batch)
            for image, mask in zip(out["image"], out["mask"], strict=True):
                yield {"image": image, "mask": mask, "name": f"{split}_{n}"}
                n += 1
