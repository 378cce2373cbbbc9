"""Training data as analysts hold it: georeferenced scenes plus vector labels, the TorchGeo way.

``dataset.name: geo`` reads one or more scenes (any CRS, any size) as a TorchGeo
:class:`~torchgeo.datasets.RasterDataset` and label polygons (GeoPackage, Shapefile, GeoJSON,
FlatGeobuf...) as a :class:`~torchgeo.datasets.VectorDataset`; their intersection
(``imagery & labels``) answers a query box with the image pixels and the polygons rasterised on
the same grid, labels reprojected to the imagery's CRS on the fly. TorchGeo's samplers choose the
boxes: :class:`~torchgeo.samplers.RandomPatchSampler` for training patches,
:class:`~torchgeo.samplers.GriddedPatchSampler` for the validation grid (the 0.10 successors of
``RandomGeoSampler`` / ``GridGeoSampler``).

The split is spatial: the region (imagery footprint, or its part inside an AOI) is cut into square
blocks of ``block_size`` pixels and a deterministic fraction of the blocks is held out for
validation. Training patches lie wholly inside training blocks (the sampler erodes its region by
half a patch diagonal), and a validation pixel is scored only inside the validation block it
belongs to, so validation never sees training ground and no pixel is scored twice.

Reading is separate from sampling and from rsseg's batch contract: :class:`GeoScene` reads raw
pixels and class labels for a box, :class:`GeoPatches` turns a sampler's box into
``{"image": [C,P,P] float normalised, "mask": [P,P] int64}`` (255 = ignore outside the valid
ground), and :class:`GeoDataModule` wires both into the :class:`RsSegDataModule` interface that
training, ``rsseg stats`` and ``rsseg evaluate -m`` use.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
import shapely
import torch
from rasterio.features import geometry_mask
from rasterio.transform import from_origin
from shapely.geometry.base import BaseGeometry
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler
from torchgeo.datasets import IntersectionDataset, RasterDataset, VectorDataset
from torchgeo.samplers import GriddedPatchSampler, RandomPatchSampler

from rsseg.config import Config, DatasetConfig
from rsseg.data.datamodule import FindPairs, RsSegDataModule, _gsd_from_file
from rsseg.data.normalize import Normalizer
from rsseg.data.splits import holdout
from rsseg.data.stats import STATS_VERSION, DatasetStats, StatsAccumulator, _write_cache, cache_path
from rsseg.errors import ConfigError, DatasetError, DatasetNotFoundError

#: largest side (pixels) read at once when a whole block is read (statistics, evaluation)
READ_CHUNK = 1024
GEO_SPLITS = ("train", "val")

Box = tuple[slice, slice]


# ---------------------------------------------------------------------------------------------- files
def _resolve(root: str | None, entry: str) -> str:
    path = Path(entry).expanduser()
    return str(path if path.is_absolute() or root is None else Path(root) / path)


def image_files(ds: DatasetConfig) -> list[str]:
    """The scene files named by ``dataset.geo.images`` (paths or globs, relative to ``dataset.root``)."""
    if not ds.geo.images or not ds.geo.labels:
        raise ConfigError("dataset 'geo' needs config keys 'dataset.geo.images' (image files or globs) and "
                         "'dataset.geo.labels' (vector files), e.g. dataset.geo.images=[scene.tif] "
                         "dataset.geo.labels=[buildings.gpkg]")
    files: list[str] = []
    for entry in ds.geo.images:
        pattern = _resolve(ds.root, entry)
        found = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        found = [f for f in found if Path(f).is_file()]
        if not found:
            raise DatasetNotFoundError(f"no image file matches {pattern!r} (config key 'dataset.geo.images')")
        files += [f for f in found if f not in files]
    return files


def label_files(ds: DatasetConfig) -> list[str]:
    """The vector label files of ``dataset.geo.labels``, each checked to be readable."""
    import pyogrio

    files = []
    for entry in ds.geo.labels:
        path = _resolve(ds.root, entry)
        if not Path(path).is_file():
            raise DatasetNotFoundError(f"label file {path} not found (config key 'dataset.geo.labels')")
        try:
            layers = [str(name) for name, _ in pyogrio.list_layers(path)]
        except Exception as exc:  # pyogrio raises DataSourceError and friends for unreadable files
            raise DatasetError(f"cannot read vector labels {path}: {exc} (GeoPackage, Shapefile, GeoJSON or "
                             "FlatGeobuf expected)") from None
        if ds.geo.layer is not None and ds.geo.layer not in layers:
            raise DatasetError(f"label file {path} has no layer {ds.geo.layer!r} (config key 'dataset.geo.layer'); "
                             f"its layers: {', '.join(layers)}")
        info = pyogrio.read_info(path, layer=ds.geo.layer, force_feature_count=True)
        if info["features"] == 0:
            # else TorchGeo finds no bounds to intersect and the message would blame the CRSs
            layer = ds.geo.layer if ds.geo.layer is not None else (layers[0] if layers else None)
            raise DatasetError(f"label file {path} holds no features (layer {layer!r}); export the labelled polygons "
                               "into it, or name the layer holding them in dataset.geo.layer")
        if info["crs"] is None:
            # TorchGeo would silently read it as EPSG:4326
            raise DatasetError(f"label file {path} has no CRS; save it with one (a Shapefile needs its .prj)")
        files.append(path)
    return files


# ---------------------------------------------------------------------------------------------- TorchGeo datasets
class SceneImagery(RasterDataset):
    """The user's scenes: the first ``len(bands)`` bands of each file, in file order, warped to the
    CRS and resolution of the first file (TorchGeo's behaviour for mixed CRSs)."""

    def __init__(self, files: Sequence[str], bands: Sequence[str]) -> None:
        # a folder of scenes has no band names of its own: rsseg's convention (as for folder
        # datasets) is that the configured bands come first, in order
        self.all_bands = tuple(bands)
        super().__init__(paths=list(files), bands=list(bands), cache=True)


class VectorLabels(VectorDataset):
    """Label polygons rasterised per query box; the burnt value is ``class index + 1`` (0 = no polygon).

    ``attribute`` holds a class name from ``classes`` or a class index; without it every polygon is
    ``label_class``. A feature whose attribute is empty draws nothing.
    """

    def __init__(self, files: Sequence[str], *, crs: Any, res: tuple[float, float], layer: str | None,
                 classes: Sequence[str], attribute: str | None = None, label_class: str | None = None) -> None:
        self.classes = list(classes)
        self.attribute = attribute
        self.fixed = None if attribute is not None or label_class is None else self.classes.index(label_class) + 1
        super().__init__(paths=list(files), crs=crs, res=res, layer=layer, label_name=attribute)

    def burn_value(self, value: Any) -> int:
        """0 (draw nothing) for an empty value, else the class index + 1; DatasetError for unknown values."""
        if value is None or (np.ndim(value) == 0 and bool(pd.isna(value))):
            return 0
        if isinstance(value, str):
            if value in self.classes:
                return self.classes.index(value) + 1
            if not value.strip().lstrip("-").isdigit():
                raise DatasetError(f"label value {value!r} of attribute {self.attribute!r} is not one of the classes "
                                 f"({', '.join(self.classes)}); add it to dataset.classes or fix the labels")
        index = int(value)
        if index != float(value) or not 0 <= index < len(self.classes):
            raise DatasetError(f"label value {value!r} of attribute {self.attribute!r} is not a class index "
                             f"0..{len(self.classes) - 1} (or a class name: {', '.join(self.classes)})")
        return index + 1

    def get_label(self, feature: Any) -> int:
        if self.fixed is not None:
            return self.fixed
        return self.burn_value(feature[self.attribute])

    def __getitem__(self, index: Any) -> dict[str, Any]:
        try:
            return super().__getitem__(index)
        except IndexError:
            # no label file's extent reaches this box (an AOI may extend past the labels): nothing drawn
            x, y, _ = self._disambiguate_slice(index)
            h, w = round((y.stop - y.start) / y.step), round((x.stop - x.start) / x.step)
            return {"mask": torch.zeros(h, w, dtype=torch.long)}


def check_label_values(labels: VectorLabels, files: Sequence[str], layer: str | None) -> None:
    """Fail before training when a label file lacks the attribute or holds a value no class takes."""
    if labels.attribute is None:
        return
    import pyogrio

    for path in files:
        df = pyogrio.read_dataframe(path, layer=layer, read_geometry=False)
        if labels.attribute not in df.columns:
            raise DatasetError(f"label file {path} has no attribute {labels.attribute!r} (config key "
                             f"'dataset.geo.attribute'); its attributes: {', '.join(map(str, df.columns))}")
        for value in df[labels.attribute].dropna().unique():
            labels.burn_value(value.item() if hasattr(value, "item") else value)


def _read_aoi(path: str, crs: Any) -> BaseGeometry:
    import geopandas as gpd

    try:
        aoi = gpd.read_file(path)
    except Exception as exc:
        raise DatasetError(f"cannot read the AOI {path}: {exc} (config key 'dataset.geo.aoi')") from None
    if aoi.crs is None:
        raise DatasetError(f"the AOI {path} has no CRS; save it with one (e.g. EPSG:4326)")
    geom = aoi.to_crs(crs).union_all()
    if geom.is_empty or geom.area == 0:
        raise DatasetError(f"the AOI {path} holds no polygon")
    return geom


# ---------------------------------------------------------------------------------------------- the scene
@dataclass(frozen=True)
class Block:
    """One square cell of the spatial split, clipped to the region (``ground``) it scores."""

    name: str
    box: BaseGeometry
    ground: BaseGeometry
    split: str


class GeoScene:
    """Imagery & labels of a ``geo`` dataset config, the region they cover and its split into blocks.

    Args:
        ds: the dataset section (``name: geo``).
        val_seed: seed of the choice of validation blocks (fixed, so every run validates on the
            same ground).
    """

    def __init__(self, ds: DatasetConfig, val_seed: int = 0) -> None:
        self.ds = ds
        self.classes = list(ds.classes)
        self.ignore = ds.ignore_index
        g = ds.geo
        self.background = self.ignore if g.background is None else self.classes.index(g.background)
        self.files = image_files(ds)
        for f in self.files:
            with rasterio.open(f) as src:
                if src.count < len(ds.bands):
                    raise DatasetError(f"image {f} has {src.count} band(s) but dataset.bands lists {len(ds.bands)} "
                                     f"({', '.join(ds.bands)})")
                if src.crs is None and not src.gcps[0]:
                    raise DatasetError(f"image {f} is not georeferenced (no CRS); vector labels need a georeferenced scene")
        self.imagery = SceneImagery(self.files, ds.bands)
        # TorchGeo takes CRS and resolution from the first of its (sorted) files: its grid is the scene grid
        with rasterio.open(self.imagery.files[0]) as src:
            self.nodata = src.nodata
            self.origin = (src.transform.c, src.transform.f)
        lfiles = label_files(ds)
        self.labels = VectorLabels(lfiles, crs=self.imagery.crs, res=self.imagery.res, layer=g.layer,
                                   classes=self.classes, attribute=g.attribute, label_class=g.label_class)
        check_label_values(self.labels, lfiles, g.layer)
        try:
            self.dataset = IntersectionDataset(self.imagery, self.labels, spatial_only=True)
        except RuntimeError:
            raise DatasetError(f"the labels ({', '.join(lfiles)}) do not overlap the imagery ({', '.join(self.files)}) "
                             "once both are in the imagery's CRS; check the files and their CRSs") from None
        self.res: tuple[float, float] = tuple(self.imagery.res)  # type: ignore[assignment]
        self.footprint = self.imagery.index.geometry.union_all()
        region = self.footprint
        if g.aoi is not None:
            region = region & _read_aoi(_resolve(ds.root, g.aoi), self.imagery.crs)
            if region.area == 0:
                raise DatasetError(f"the AOI {g.aoi} does not overlap the imagery")
        self.region = region
        self.blocks = self._split(g.block_size, ds.val_fraction, val_seed)

    def _split(self, block: int, val_fraction: float, seed: int) -> list[Block]:
        xmin, ymin, xmax, ymax = self.footprint.bounds
        bw, bh = block * self.res[0], block * self.res[1]
        # blocks are anchored at the first scene's top-left corner, so they follow its pixel grid
        ox, oy = self.origin
        rows = range(math.floor(round((oy - ymax) / bh, 6)), math.ceil(round((oy - ymin) / bh, 6)))
        cols = range(math.floor(round((xmin - ox) / bw, 6)), math.ceil(round((xmax - ox) / bw, 6)))
        cells = []
        for r in rows:
            for c in cols:
                box = shapely.box(ox + c * bw, oy - (r + 1) * bh, ox + (c + 1) * bw, oy - r * bh)
                ground = box & self.region
                if ground.area >= self.res[0] * self.res[1]:
                    cells.append((f"block_r{r}_c{c}", box, ground))
        if len(cells) < 2:
            raise DatasetError(f"the region holds {len(cells)} block(s) of {block} px: too few for a spatial train/val "
                             "split; lower config key 'dataset.geo.block_size'")
        val = set(holdout(len(cells), val_fraction, seed))
        return [Block(n, b, gr, "val" if i in val else "train") for i, (n, b, gr) in enumerate(cells)]

    def ground(self, split: str) -> BaseGeometry:
        """Union of the region inside the blocks of ``split``."""
        return shapely.union_all([b.ground for b in self.split_blocks(split)])

    def split_blocks(self, split: str) -> list[Block]:
        if split not in GEO_SPLITS:
            raise ConfigError(f"a geo dataset has splits {', '.join(GEO_SPLITS)} (spatial blocks); got {split!r}")
        return [b for b in self.blocks if b.split == split]

    def read(self, box: Box, ground: BaseGeometry) -> tuple[np.ndarray, np.ndarray]:
        """Raw image ``[C,h,w]`` float32 and labels ``[h,w]`` uint8 (classes, ``ignore`` outside
        ``ground``, outside the imagery and on image nodata) of a query box in the imagery's CRS."""
        x, y = box
        sample = self.dataset[x, y]
        image = sample["image"].numpy()
        burnt = sample["mask"].numpy()
        labels = np.where(burnt == 0, self.background, burnt - 1).astype(np.uint8)
        h, w = labels.shape
        inside = ground & shapely.box(x.start, y.start, x.stop, y.stop)
        if inside.is_empty:
            valid = np.zeros((h, w), dtype=bool)
        else:
            transform = from_origin(x.start, y.stop, self.res[0], self.res[1])
            valid = geometry_mask([inside], (h, w), transform, invert=True)
        if self.nodata is not None:
            valid &= ~(image == self.nodata).all(0)
        labels[~valid] = self.ignore
        return image, labels

    def block_boxes(self, block: Block) -> Iterator[Box]:
        """Query boxes covering a block in chunks of at most ``READ_CHUNK`` pixels a side."""
        xmin, ymin, xmax, ymax = block.box.bounds
        cw, ch = READ_CHUNK * self.res[0], READ_CHUNK * self.res[1]
        y = ymax
        while y > ymin + 1e-9 * ch:
            x = xmin
            while x < xmax - 1e-9 * cw:
                yield slice(x, min(x + cw, xmax)), slice(max(y - ch, ymin), y)
                x += cw
            y -= ch

    def read_block(self, block: Block) -> tuple[np.ndarray, np.ndarray]:
        """A whole block: raw image ``[C,H,W]`` and labels ``[H,W]``, assembled from chunks."""
        xmin, _, _, ymax = block.box.bounds
        parts = []
        for x, y in self.block_boxes(block):
            image, labels = self.read((x, y), block.ground)
            r = round((ymax - y.stop) / self.res[1])
            c = round((x.start - xmin) / self.res[0])
            parts.append((r, c, image, labels))
        height = max(r + lab.shape[0] for r, _, _, lab in parts)
        width = max(c + lab.shape[1] for _, c, _, lab in parts)
        image = np.zeros((parts[0][2].shape[0], height, width), dtype=np.float32)
        labels = np.full((height, width), self.ignore, dtype=np.uint8)
        for r, c, im, lab in parts:
            image[:, r : r + lab.shape[0], c : c + lab.shape[1]] = im
            labels[r : r + lab.shape[0], c : c + lab.shape[1]] = lab
        return image, labels

    def cache_key(self, split: str) -> str:
        """Hash of everything the statistics of ``split`` depend on (settings, files, their sizes and times)."""
        h = hashlib.sha256()
        h.update(json.dumps([STATS_VERSION, "geo", split, dataclasses.asdict(self.ds.geo), self.classes, self.ds.bands,
                             self.ds.scale, self.ignore, self.ds.val_fraction]).encode())
        for f in [*self.files, *self.labels.files, *([_resolve(self.ds.root, self.ds.geo.aoi)] if self.ds.geo.aoi else [])]:
            st = os.stat(f)
            h.update(f"{Path(f).resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]

    def stats(self, split: str = "train", use_cache: bool = True) -> DatasetStats:
        """Statistics of a split; each block counts as one image for the region (image-level) counts.

        Cached in the user cache directory like every dataset's (see :mod:`rsseg.data.stats`).
        """
        path = cache_path(self.ds.root or Path(self.files[0]).parent, self.cache_key(split))
        if use_cache and path.is_file():
            try:
                return DatasetStats.from_json(path.read_text())
            except (ValueError, TypeError, KeyError):
                pass  # stale or corrupt cache: recompute
        stats = self._compute_stats(split)
        _write_cache(path, stats)
        return stats

    def _compute_stats(self, split: str) -> DatasetStats:
        acc = StatsAccumulator(len(self.classes), self.ignore, self.ds.scale)
        for block in self.split_blocks(split):
            for box in self.block_boxes(block):
                image, labels = self.read(box, block.ground)
                acc.add(image, labels)
            acc.end_image()
        return acc.result(self.classes, f"geo:{','.join(self.files)}:{split}")


# ---------------------------------------------------------------------------------------------- samples
class GeoPatches(Dataset):
    """Map-style view of a :class:`GeoScene` indexed by sampler boxes, giving rsseg samples.

    ``cells`` are ``(where, ground)`` pairs: a box is scored on the ground of the cell whose
    ``where`` holds its centre (the block a validation grid was laid over; for training the whole
    training ground), so overlapping grid patches of neighbouring blocks never score a pixel twice.
    """

    def __init__(self, scene: GeoScene, cells: Sequence[tuple[BaseGeometry, BaseGeometry]], normalizer: Normalizer) -> None:
        self.scene = scene
        self.cells = list(cells)
        self.norm = normalizer

    def _ground(self, box: Box) -> BaseGeometry:
        x, y = box
        centre = shapely.Point((x.start + x.stop) / 2, (y.start + y.stop) / 2)
        for where, ground in self.cells:
            if where.covers(centre):
                return ground
        return shapely.Polygon()  # not on any cell: nothing to score

    def __getitem__(self, box: Box) -> dict[str, Tensor]:
        image, labels = self.scene.read(box[:2], self._ground(box))
        return {"image": torch.from_numpy(self.norm(image)), "mask": torch.from_numpy(labels.astype(np.int64))}

    def __len__(self) -> int:  # indexed by boxes, not integers: the sampler sets the epoch length
        raise TypeError("GeoPatches is indexed by sampler boxes; its length is the sampler's")


class ChainSampler(Sampler):
    """Samplers one after the other (one :class:`GriddedPatchSampler` per validation block)."""

    def __init__(self, samplers: Sequence[Sampler]) -> None:
        self.samplers = list(samplers)

    def __iter__(self) -> Iterator[Any]:
        for s in self.samplers:
            yield from s

    def __len__(self) -> int:
        return sum(len(s) for s in self.samplers)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- datamodule
class GeoDataModule(RsSegDataModule):
    """The :class:`RsSegDataModule` interface over a :class:`GeoScene` (``dataset.name: geo``).

    Training: ``RandomPatchSampler`` patches of ``patch_size`` inside the training blocks, then
    rsseg's batch augmentation (scale/crop/flip/rotate to ``crop_size``) on the device. Validation:
    a ``GriddedPatchSampler`` grid per validation block. Evaluation (``eval_tiles``): whole blocks.
    """

    def __init__(self, cfg: Config, find_pairs: FindPairs, download: bool = False) -> None:
        super().__init__(cfg, find_pairs, download)
        self._scene: GeoScene | None = None
        self.train_sampler: Sampler | None = None
        self.val_sampler: Sampler | None = None

    @property
    def scene(self) -> GeoScene:
        if self._scene is None:
            self._scene = GeoScene(self.ds)
        return self._scene

    def pairs(self, split: str) -> list:
        raise DatasetError("a geo dataset has no image/mask file pairs; it is read through TorchGeo by region")

    def input_files(self, split: str) -> list[tuple[str, tuple[int, ...]]]:
        # the scenes hold both splits (blocks of one region): their values are the contract
        return [(f, tuple(range(1, len(self.ds.bands) + 1))) for f in self.scene.files]

    def prepare_data(self) -> None:
        pass  # nothing to download: the scenes and labels are the user's files

    def split_stats(self, split: str, use_cache: bool = True, on_progress: object = None) -> DatasetStats:
        # regions, not files: nothing to count for on_progress
        return self.scene.stats(split, use_cache)

    @property
    def gsd(self) -> float | None:
        if self.ds.gsd is None:
            self.ds.gsd = _gsd_from_file(self.scene.files[0])
        return self.ds.gsd

    @property
    def patch_size(self) -> int:
        return 32 * math.ceil(math.ceil(self.crop_size / min(self.scales)) / 32)

    def setup(self, stage: str | None = None) -> None:
        scene, size, norm = self.scene, self.patch_size, self.normalizer()
        if stage in (None, "fit") and self.train_dataset is None:
            ground = scene.ground("train")
            # RandomPatchSampler erodes its region by half a patch diagonal; check it leaves room
            half = math.hypot(size * scene.res[0], size * scene.res[1]) / 2
            if shapely.buffer(self.scene.footprint & ground, -half).is_empty:
                raise DatasetError(
                    f"the training blocks leave no room for a {size} px patch (crop_size / min(scales)); raise "
                    "'dataset.geo.block_size', lower 'optim.crop_size', or widen the AOI")
            self.train_sampler = RandomPatchSampler(scene.imagery, size=size, roi=ground,
                                                    length=self.ds.geo.samples_per_epoch, generator=self.cfg.optim.seed)
            self.train_dataset = GeoPatches(scene, [(ground, ground)], norm)  # type: ignore[assignment]
        if stage in (None, "fit", "validate") and self.val_dataset is None:
            blocks = scene.split_blocks("val")
            self.val_sampler = ChainSampler([GriddedPatchSampler(scene.imagery, size=size, roi=b.ground) for b in blocks])
            self.val_dataset = GeoPatches(scene, [(b.box, b.ground) for b in blocks], norm)  # type: ignore[assignment]

    def _geo_loader(self, dataset: Dataset, sampler: Sampler, train: bool) -> DataLoader:
        workers = self.ds.num_workers
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, num_workers=workers,
                          drop_last=train and len(sampler) > self.batch_size,  # type: ignore[arg-type]
                          persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        assert self.train_dataset is not None and self.train_sampler is not None
        return self._geo_loader(self.train_dataset, self.train_sampler, train=True)

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        assert self.val_dataset is not None and self.val_sampler is not None
        return self._geo_loader(self.val_dataset, self.val_sampler, train=False)

    def eval_tiles(self, split: str) -> Iterator[dict]:
        """Whole blocks of ``split`` (``val`` or ``train``), labels ignored outside the block's ground."""
        norm = self.normalizer()
        for block in self.scene.split_blocks(split):
            image, labels = self.scene.read_block(block)
            yield {"image": torch.from_numpy(norm(image)), "mask": torch.from_numpy(labels.astype(np.int64)),
                   "name": block.name}
