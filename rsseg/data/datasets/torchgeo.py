"""Any TorchGeo segmentation datamodule (``dataset.name: torchgeo``), by class path and init
arguments as LightningCLI writes them (``dataset.torchgeo``, :class:`TorchGeoSourceConfig`, declared here).

Classes, colours and bands come from the config; the adapter in :mod:`rsseg.data.torchgeo_adapter`
maps the datamodule's samples to rsseg's batch contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rsseg.config import Config, DatasetConfig
from rsseg.data.datasets.base import DatasetSpec, register_dataset
from rsseg.errors import ConfigError

if TYPE_CHECKING:
    from rsseg.data.datamodule import RsSegDataModule


@dataclass
class TorchGeoSourceConfig:
    """``dataset.name: torchgeo``: any TorchGeo segmentation datamodule, by class path and init
    arguments as LightningCLI writes them (see :mod:`rsseg.data.torchgeo_adapter`)."""

    #: e.g. torchgeo.datamodules.LoveDADataModule
    class_path: str | None = None
    #: keyword arguments of the class (dataset.root, when set, is passed as ``root``)
    init_args: dict[str, Any] = field(default_factory=dict)
    #: raw mask value -> rsseg class index (255 = ignore), e.g. LoveDA [255, 0, 1, 2, 3, 4, 5, 6];
    #: null: mask values are already class indices
    label_map: list[int] | None = None


@dataclass
class TorchGeoOptions:
    #: ``name: torchgeo`` settings
    torchgeo: TorchGeoSourceConfig = field(default_factory=TorchGeoSourceConfig)


@register_dataset
class TorchGeoDataModuleSpec(DatasetSpec):
    name = "torchgeo"
    title = "a TorchGeo datamodule"
    layout = "whatever dataset.torchgeo.class_path expects under dataset.root"
    options = TorchGeoOptions

    def validate(self, ds: DatasetConfig) -> None:
        """The ``dataset.torchgeo`` settings a run cannot start without."""
        t = ds.torchgeo
        if not t.class_path or "." not in t.class_path:
            raise ConfigError("dataset 'torchgeo' needs config key 'dataset.torchgeo.class_path', e.g. "
                             "torchgeo.datamodules.LoveDADataModule")
        bad = [v for v in t.label_map or [] if not (0 <= v < len(ds.classes) or v == ds.ignore_index)]
        if bad:
            raise ConfigError(f"config key 'dataset.torchgeo.label_map' holds {bad}: each entry must be a class "
                             f"index 0..{len(ds.classes) - 1} or the ignore value {ds.ignore_index}")

    def build_datamodule(self, cfg: Config, download: bool = False) -> RsSegDataModule:
        from rsseg.data.torchgeo_adapter import TorchGeoAdapterDataModule

        return TorchGeoAdapterDataModule(self.resolved(cfg), self.find_pairs, download=download)
