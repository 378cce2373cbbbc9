"""Georeferenced scenes + vector labels (``dataset.name: geo``), read through TorchGeo.

Classes, colours and bands come from the config; the files and label attribute from
``dataset.geo`` (:class:`rsseg.config.GeoSourceConfig`). Reading, rasterising and the spatial
train/val split live in :mod:`rsseg.data.geo`; this spec only plugs it into the registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rsseg.data.datasets.base import DatasetSpec, register_dataset
from rsseg.errors import ConfigError

if TYPE_CHECKING:
    from rsseg.config import Config, DatasetConfig
    from rsseg.data.datamodule import RsSegDataModule


@register_dataset
class GeoScenes(DatasetSpec):
    name = "geo"
    title = "a geo dataset (scenes + vector labels)"
    layout = "the image files/globs of dataset.geo.images and the label files of dataset.geo.labels (relative to dataset.root)"

    def validate(self, ds: DatasetConfig) -> None:
        """The ``dataset.geo`` settings a run cannot start without (files are checked where read)."""
        g = ds.geo
        if g.attribute is None and g.label_class is None:
            raise ConfigError("dataset 'geo' needs 'dataset.geo.attribute' (the field holding each polygon's class) "
                             "or 'dataset.geo.label_class' (every polygon is that class)")
        for key in ("background",) if g.attribute is not None else ("label_class", "background"):
            name = getattr(g, key)
            if name is not None and name not in ds.classes:
                raise ConfigError(f"config key 'dataset.geo.{key}' is {name!r}, which is not in dataset.classes "
                                 f"({', '.join(ds.classes)})")
        if g.block_size < 32:
            raise ConfigError("config key 'dataset.geo.block_size' must be at least 32 pixels")

    def build_datamodule(self, cfg: Config, download: bool = False) -> RsSegDataModule:
        from rsseg.data.geo import GeoDataModule  # TorchGeo's dataset modules are slow to import

        return GeoDataModule(cfg, download=download)
