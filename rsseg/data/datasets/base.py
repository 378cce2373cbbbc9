"""What rsseg knows about a dataset, in one object: :class:`DatasetSpec`, and the registry of specs.

A spec holds a dataset's classes and colours, the bands its files carry, its default bands and
ground sample distance, how its labels are decoded, how image/label files are paired per split,
which classes its benchmark leaves out of the mean scores, and where to get it. Every
dataset-specific decision in rsseg is a lookup here (``get_dataset(cfg.dataset.name)``), never a
comparison with a dataset name. A new dataset is one module that subclasses :class:`DatasetSpec`
and decorates it with :func:`register_dataset` (as timm registers models), plus its configs.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from rasterio import DatasetReader
from rasterio.windows import Window

from rsseg.config import Config, DatasetConfig
from rsseg.data.raster import TilePair, read_index_labels
from rsseg.data.splits import SPLITS, holdout, split_holdout
from rsseg.errors import ConfigError, DatasetNotFoundError
from rsseg.registry import Registry

if TYPE_CHECKING:  # Lightning loads only when a datamodule is built (the CLI lists datasets without it)
    from rsseg.data.datamodule import RsSegDataModule
    from rsseg.data.stats import DatasetStats
    from rsseg.progress import ProgressFn

__all__ = ["SPLITS", "DATASETS", "DatasetSpec", "dataset_names", "get_dataset", "holdout", "register_dataset",
           "split_holdout"]


class DatasetSpec:
    """One dataset's facts and file conventions. Subclasses set the class attributes and
    implement :meth:`pairs`; :meth:`decode_labels` defaults to index-coded labels.

    Empty ``classes`` / ``file_bands`` mean "from the config" (a user folder).
    """

    #: registry key, the value of ``dataset.name``
    name: ClassVar[str]
    #: human-readable name used in messages
    title: ClassVar[str]
    #: class names in label order
    classes: ClassVar[tuple[str, ...]] = ()
    #: one ``#rrggbb`` colour per class
    colors: ClassVar[tuple[str, ...]] = ()
    #: band names of the image files, in file order
    file_bands: ClassVar[tuple[str, ...]] = ()
    #: default model bands (a subset of ``file_bands``, in model order)
    bands: ClassVar[tuple[str, ...]] = ()
    #: ground sample distance in metres
    gsd: ClassVar[float | None] = None
    #: classes the benchmark leaves out of mIoU/mF1 (OA keeps them)
    exclude: ClassVar[tuple[str, ...]] = ()
    #: the expected files under ``dataset.root``
    layout: ClassVar[str] = ""
    #: where to get the data (shown with "dataset not found")
    download_hint: ClassVar[str] = ""
    #: whether ``pairs(..., download=True)`` can fetch the data when ``dataset.root`` is missing
    downloadable: ClassVar[bool] = False
    #: the bundled config ``rsseg train --dataset <name>`` runs without ``-c``/``-r``
    #: (``configs/<name>/<method>.yaml``). It names a regularizer only when the pre-registered study's
    #: decision rule (docs/science.md) passed on that data; until then every dataset trains the baseline.
    default_method: ClassVar[str] = "ce"
    #: this dataset's own config keys: a dataclass whose fields (types, ``Literal`` choices,
    #: defaults) become keys of the ``dataset`` section, e.g. LoveDA's ``scene``; checked beyond
    #: their types by :meth:`validate`
    options: ClassVar[type | None] = None

    # -------------------------------------------------------------- files
    def pairs(self, ds: DatasetConfig, split: str, download: bool = False) -> list[TilePair]:
        """Image/label pairs of ``split`` (one of :data:`SPLITS`) for a resolved dataset config."""
        raise NotImplementedError

    def find_pairs(self, ds: DatasetConfig, split: str, download: bool = False) -> list[TilePair]:
        """:meth:`pairs` after checking the split and the root, each pair carrying this dataset's
        label decoder (so readers below the registry never look a dataset up)."""
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        if ds.root is None:
            raise ConfigError("config key 'dataset.root' is not set: point it at the dataset folder")
        if not Path(ds.root).is_dir() and not (download and self.downloadable):
            raise DatasetNotFoundError(f"dataset root {ds.root} does not exist (config key 'dataset.root'); {self.hint()}")
        return [dataclasses.replace(p, decoder=self.decode_labels) for p in self.pairs(ds, split, download)]

    def decode_labels(self, src: DatasetReader, window: Window | None, num_classes: int,
                      ignore_index: int) -> np.ndarray:
        """Labels ``[h, w]`` uint8 (classes 0..K-1, ``ignore_index``) of an open label raster."""
        return read_index_labels(src, window, num_classes, ignore_index)

    def hint(self) -> str:
        """Where the files are expected and where to get them (for "not found" errors)."""
        text = f"{self.title} expects {self.layout}"
        return f"{text} ({self.download_hint})" if self.download_hint else text

    def not_found(self, what: str) -> DatasetNotFoundError:
        return DatasetNotFoundError(f"{what}; {self.hint()}")

    # -------------------------------------------------------------- config
    def resolve(self, ds: DatasetConfig) -> DatasetConfig:
        """A copy of ``ds`` with this dataset's classes, colours, bands and gsd filled in.

        A key still at the generic :class:`~rsseg.config.DatasetConfig` default takes the
        dataset's value; a key the user set is kept, but a class list of the wrong length is an
        error (the label encoding is fixed by the dataset), and so is a band the files lack.
        """
        ds = copy.deepcopy(ds)
        if not self.classes:
            return ds
        generic = DatasetConfig()
        if ds.classes == generic.classes:
            ds.classes = list(self.classes)
        if ds.colors == generic.colors:
            ds.colors = list(self.colors)
        if ds.bands == generic.bands:
            ds.bands = list(self.bands)
        if ds.gsd is None:
            ds.gsd = self.gsd
        k = len(self.classes)
        if len(ds.classes) != k or len(ds.colors) != k:
            raise ConfigError(
                f"dataset {self.name} has {k} classes ({', '.join(self.classes)}) but the config lists "
                f"{len(ds.classes)} classes / {len(ds.colors)} colours; remove dataset.classes and "
                "dataset.colors from the config to use the defaults"
            )
        unknown = [b for b in ds.bands if b not in self.file_bands]
        if unknown:
            raise ConfigError(
                f"dataset {self.name} has bands {', '.join(self.file_bands)}; config key 'dataset.bands' asks for "
                f"{', '.join(unknown)}"
            )
        return ds

    # -------------------------------------------------------------- reading
    def build_datamodule(self, cfg: Config, download: bool = False) -> RsSegDataModule:
        """The datamodule that serves this dataset: file pairs through :class:`RsSegDataModule`;
        datasets read otherwise (TorchGeo regions, a wrapped datamodule) override this."""
        from rsseg.data.datamodule import RsSegDataModule

        return RsSegDataModule(self.resolved(cfg), self.find_pairs, download=download)

    def resolved(self, cfg: Config) -> Config:
        """``cfg`` with its dataset section :meth:`resolve` d."""
        return dataclasses.replace(cfg, dataset=self.resolve(cfg.dataset))

    def split_stats(self, cfg: Config, split: str, use_cache: bool = True,
                    on_progress: ProgressFn | None = None) -> DatasetStats:
        """Class and band statistics of ``split`` (``cfg.dataset.root`` already set), read by this
        dataset's datamodule."""
        return self.build_datamodule(cfg).split_stats(split, use_cache, on_progress)

    def validate(self, ds: DatasetConfig) -> None:
        """Refuse, with a :class:`ConfigError`, settings a run of this dataset cannot start with
        (its :attr:`options` beyond their types)."""

    def exclusions(self, class_names: Sequence[str]) -> list[int]:
        """Indices of :attr:`exclude` in ``class_names`` (classes the names lack are skipped)."""
        return [list(class_names).index(c) for c in self.exclude if c in class_names]

    def band_indexes(self, wanted: Sequence[str]) -> tuple[int, ...]:
        """1-based indexes into the files' bands of the ``wanted`` band names."""
        return tuple(self.file_bands.index(b) + 1 for b in wanted)


# ------------------------------------------------------------------------------------ registry
#: ``dataset.name`` -> spec
DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset[S: type[DatasetSpec]](cls: S) -> S:
    """Class decorator: make ``cls()`` the spec of ``dataset.name == cls.name``."""
    DATASETS.add(cls.name, cls())
    return cls


def dataset_names() -> tuple[str, ...]:
    """Registered dataset names, in registration order."""
    return DATASETS.names()


def get_dataset(name: str) -> DatasetSpec:
    """The spec registered as ``name``."""
    return DATASETS.get(name)
