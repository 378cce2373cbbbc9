"""Any TorchGeo segmentation datamodule (``dataset.name: torchgeo``), by class path and init
arguments as LightningCLI writes them (``dataset.torchgeo``, :class:`rsseg.config.TorchGeoSourceConfig`).

Classes, colours and bands come from the config; the adapter in :mod:`rsseg.data.torchgeo_adapter`
maps the datamodule's samples to rsseg's batch contract.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rsseg.data.datasets.base import DatasetSpec, register_dataset
from rsseg.errors import ConfigError

if TYPE_CHECKING:
    from rsseg.config import Config, DatasetConfig
    from rsseg.data.datamodule import RsSegDataModule


@register_dataset
class TorchGeoDataModuleSpec(DatasetSpec):
    name = "torchgeo"
    title = "a TorchGeo datamodule"
    layout = "whatever dataset.torchgeo.class_path expects under dataset.root"

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

        return TorchGeoAdapterDataModule(cfg, download=download)
