"""The ISPRS 2D semantic labeling benchmark (Potsdam, Vaihingen): what both datasets share.

6 classes colour-coded in RGB label rasters, in the benchmark's own order (impervious surfaces
first, clutter last, the order published per-class tables use); mIoU/mF1 leave clutter out (OA
keeps it). Tiles come in the zip archives the benchmark hands out and are read straight from
them (GDAL ``/vsizip/``) or from their extracted contents; the train/test tile lists are
TorchGeo's. ISPRS has no validation split: ``val`` is held out of the training tiles.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from rasterio import DatasetReader
from rasterio.windows import Window

from rsseg.config import DatasetConfig
from rsseg.data.datasets.base import DatasetSpec, split_holdout
from rsseg.data.raster import TilePair, check_pair, decode_colors
from rsseg.errors import DatasetError, InputRasterError

ISPRS_URL = "https://www.isprs.org/resources/datasets/benchmarks/UrbanSemLab/default.aspx"
ISPRS_CLASSES = ("impervious surfaces", "building", "low vegetation", "tree", "car", "clutter")
ISPRS_RGB = ((255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0))
ISPRS_COLORS = tuple("#{:02x}{:02x}{:02x}".format(*c) for c in ISPRS_RGB)



def decode_isprs(rgb: np.ndarray, ignore_index: int) -> np.ndarray:
    """ISPRS colour labels ``[3, H, W]`` -> class indices 0..5 (:data:`ISPRS_RGB`); other colours -> ignore.

    Every ISPRS colour has channels 0 or 255, so each channel is snapped to 0/255 at 128 first:
    that absorbs the few off-by-a-little colours some label files carry. Black (the eroded sets'
    boundary colour) and any other colour map to ignore.
    """
    return decode_colors(np.where(rgb > 127, 255, 0).astype(np.uint8), ISPRS_RGB, ignore_index)


@dataclass(frozen=True)
class ISPRSFiles:
    """Archive and file names of one ISPRS dataset (``{}`` is the tile id)."""

    image_zip: str
    label_zip: str
    eroded_zip: str
    image_dir: str
    image: str
    label: str
    eroded: str


def _zip_members(path: Path) -> dict[str, str]:
    """basename -> GDAL ``/vsizip/`` path for every .tif in a zip archive."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return {os.path.basename(n): f"/vsizip/{path.resolve()}/{n}" for n in names if n.lower().endswith(".tif")}


def _locate(root: Path, zip_name: str, subdir: str | None, fname: str, cache: dict[str, dict[str, str]],
            exclude: str | None = None) -> str | None:
    """Path of ``fname`` extracted under ``root`` or inside ``root/zip_name``.

    Extracted files are looked for where TorchGeo puts them (``root/subdir`` for images, ``root``
    for labels) and one folder down (e.g. ``5_Labels_all_noBoundary/`` or
    ``gts_eroded_for_participants/``), skipping ``exclude`` (Vaihingen's images share their
    labels' file names, so labels must not be found in ``top/``).
    """
    if subdir:
        cands = [root / subdir / fname, root / zip_name[:-4] / subdir / fname]
    else:
        subs = sorted(d for d in root.iterdir() if d.is_dir() and d.name != exclude) if root.is_dir() else []
        cands = [root / fname] + [d / fname for d in subs]
    for cand in cands:
        if cand.is_file():
            return str(cand)
    zpath = root / zip_name
    if zpath.is_file():
        if zip_name not in cache:
            try:
                cache[zip_name] = _zip_members(zpath)
            except zipfile.BadZipFile:
                raise DatasetError(f"{zpath} is not a valid zip archive; download it again from {ISPRS_URL}") from None
        return cache[zip_name].get(fname)
    return None


@dataclass
class ISPRSOptions:
    #: use the eroded "noBoundary" labels for evaluation (val and test; training keeps the full labels)
    eroded_labels: bool = False


class ISPRSSpec(DatasetSpec):
    """Base of the ISPRS specs; a subclass sets ``name``, ``title``, ``files``, bands and gsd."""

    classes = ISPRS_CLASSES
    colors = ISPRS_COLORS
    exclude = ("clutter",)
    download_hint = f"request the data from the ISPRS 2D semantic labeling benchmark, {ISPRS_URL}"
    files: ClassVar[ISPRSFiles]
    options = ISPRSOptions

    @property
    def layout(self) -> str:  # type: ignore[override]
        return f"{self.files.image_zip} and {self.files.label_zip} (or their extracted contents)"

    def tile_ids(self, split: str) -> list[str]:
        """TorchGeo's tile list of the benchmark's ``train`` or ``test`` split."""
        raise NotImplementedError

    def pairs(self, ds: DatasetConfig, split: str, download: bool = False) -> list[TilePair]:
        """Tiles in TorchGeo's split lists (read extracted or straight from the zips).

        ``train``/``val`` split the training tiles with :func:`~rsseg.data.datasets.base.holdout`;
        ``test`` is the benchmark test set. ``dataset.eroded_labels`` reads val and test from the
        noBoundary label set (boundaries -> ignore), as published numbers do.
        """
        eroded = ds.eroded_labels and split != "train"
        spec = self.files
        root = Path(ds.root or "")
        ids = [t[:-4] if t.endswith(".tif") else t for t in self.tile_ids("test" if split == "test" else "train")]
        label_zip, label_fmt = (spec.eroded_zip, spec.eroded) if eroded else (spec.label_zip, spec.label)
        cache: dict[str, dict[str, str]] = {}
        pairs = []
        bands = self.band_indexes(ds.bands)
        for tile in ids:
            image = _locate(root, spec.image_zip, spec.image_dir, spec.image.format(tile), cache)
            label = _locate(root, label_zip, None, label_fmt.format(tile), cache, exclude=spec.image_dir)
            if image is None or label is None:
                continue
            h, w, _, _ = check_pair(image, label)
            pairs.append(TilePair(tile, image, label, h, w, bands, self.name))
        if not pairs:
            raise self.not_found(
                f"{self.title} not found under {root}: expected {spec.image_zip} and {label_zip} there "
                f"(or their extracted contents, {spec.image_dir}/{spec.image.format('<tile>')} and "
                f"{label_fmt.format('<tile>')})"
            )
        if split == "test":
            return pairs
        return split_holdout(pairs, split, ds.val_fraction)

    def decode_labels(self, src: DatasetReader, window: Window | None, num_classes: int,
                      ignore_index: int) -> np.ndarray:
        if src.count < 3:
            raise InputRasterError(f"ISPRS label {src.name} has {src.count} band(s); expected the RGB colour-coded labels")
        return decode_isprs(src.read([1, 2, 3], window=window), ignore_index)
