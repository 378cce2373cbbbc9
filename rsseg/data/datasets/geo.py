"""Georeferenced scenes + vector labels (``dataset.name: geo``), read through TorchGeo.

Classes, colours and bands come from the config; the files and label attribute from
``dataset.geo`` (:class:`GeoSourceConfig`, declared here). Reading, rasterising and the spatial
train/val split live in :mod:`rsseg.data.geo_reader`; this spec only plugs it into the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rsseg.config import Config, DatasetConfig
from rsseg.data.datasets.base import DatasetSpec, register_dataset
from rsseg.errors import ConfigError

if TYPE_CHECKING:
    from rsseg.data.datamodule import RsSegDataModule


@dataclass
class GeoSourceConfig:
    """``dataset.name: geo``: georeferenced scenes + vector labels, read through TorchGeo's
    ``RasterDataset & VectorDataset`` and tiled by its samplers (see :mod:`rsseg.data.geo_reader`).

    Paths are relative to ``dataset.root`` (when set); ``images`` may hold globs.
    """

    #: image files or globs (GeoTIFF/COG/VRT...); several scenes and CRSs are fine
    images: list[str] = field(default_factory=list)
    #: vector label files (GPKG, SHP, GeoJSON, FlatGeobuf, ...), reprojected to the imagery's CRS
    labels: list[str] = field(default_factory=list)
    #: layer of a multi-layer label file (GeoPackage); default the first
    layer: str | None = None
    #: attribute holding each polygon's class: a name in dataset.classes or a class index
    attribute: str | None = None
    #: without ``attribute``: every polygon is this class (e.g. building footprints)
    label_class: str | None = None
    #: class of the pixels no polygon covers; null = ignore them (labels only where drawn)
    background: str | None = "background"
    #: optional vector file whose polygons limit training and validation (where labels are complete)
    aoi: str | None = None
    #: side of the square blocks (pixels) the region is split into for the spatial train/val split
    block_size: int = 1024
    #: random training patches per epoch (default: about the training area / patch area)
    samples_per_epoch: int | None = None


@dataclass
class GeoOptions:
    #: ``name: geo`` settings
    geo: GeoSourceConfig = field(default_factory=GeoSourceConfig)


@register_dataset
class GeoScenes(DatasetSpec):
    name = "geo"
    title = "a geo dataset (scenes + vector labels)"
    layout = "the image files/globs of dataset.geo.images and the label files of dataset.geo.labels (relative to dataset.root)"
    options = GeoOptions

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
        from rsseg.data.geo_reader import GeoDataModule  # TorchGeo's dataset modules are slow to import

        return GeoDataModule(self.resolved(cfg), self.find_pairs, download=download)
