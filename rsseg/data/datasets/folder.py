"""The user's own rasters: a folder of images/ + masks/ with matching file names.

Classes, colours and bands come from the config (``dataset.classes`` ...). Masks hold class
indices 0..K-1 in band 1 (their declared nodata, when not a class, is ignored), or are colour
PNGs/TIFFs with one RGB colour per class as ISPRS ships them: ``dataset.colors`` gives the colour
of each class, matched exactly (or within ``dataset.color_tolerance`` per channel), and any other
colour is ignored (``rsseg stats`` counts those pixels and names the commonest colours; training
refuses a class with no pixel beside such colours). ``dataset.mask_encoding`` picks the encoding
(``auto``: colour for masks of 3+ bands; ``color`` also reads a paletted single-band mask through
its colour table; ``index`` on a mask of 3+ bands is refused).
Images may be JPEG/PNG of any size, without georeferencing. The files hold the
configured bands first, in order (extra bands, e.g. alpha, are skipped). Without a ``val/``
folder, ``val`` is a deterministic held-out subset of the training files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rsseg.config import DatasetConfig, hex_rgb
from rsseg.data.datasets.base import SPLITS, DatasetSpec, register_dataset, split_holdout
from rsseg.data.raster import TilePair, check_pair, color_distance, has_palette
from rsseg.errors import ConfigError, DatasetError, DatasetNotFoundError, InputRasterError, LabelError

RASTER_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2")


def _rasters(folder: Path) -> dict[str, Path]:
    """Raster files of ``folder`` by name without suffix; other files (notes, .aux.xml) are skipped."""
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in RASTER_SUFFIXES and p.is_file():
            if p.stem in found:  # e.g. t1.png beside t1.tif: which one pairs with mask t1 is a guess
                raise DatasetError(f"{found[p.stem].name} and {p.name} in {folder} share the name {p.stem!r}; "
                                   "keep one of them (images and masks are paired by name)")
            found[p.stem] = p
    return found


def label_colors(ds: DatasetConfig, mask: str, mask_bands: int) -> tuple[tuple[int, int, int], ...]:
    """RGB of each class when ``mask`` is colour-coded under ``dataset.mask_encoding``, else ``()``."""
    if ds.mask_encoding == "index" and mask_bands >= 3:
        # band 1 alone would be read as class indices: red 255 becomes "ignore", red 0 class 0
        raise LabelError(f"mask {mask} has {mask_bands} bands (an RGB colour mask) but dataset.mask_encoding is index, "
                         "which reads band 1 alone as class indices; set dataset.mask_encoding: color (or auto) and "
                         "give each class's colour in dataset.colors, or save the masks as single-band class indices")
    if ds.mask_encoding == "index" or (ds.mask_encoding == "auto" and mask_bands < 3):
        return ()
    if mask_bands < 3 and not has_palette(mask):
        raise LabelError(f"mask {mask} has {mask_bands} band(s) and no colour table but dataset.mask_encoding is "
                         "color (RGB or paletted masks); set dataset.mask_encoding: index (or auto) for masks "
                         "holding class indices")
    rgb = tuple(hex_rgb(c) for c in ds.colors)
    if len(set(rgb)) < len(rgb):
        raise ConfigError(f"dataset.colors {ds.colors} repeats a colour, so colour-coded masks cannot tell those "
                          "classes apart; give every class its own mask colour")
    return rgb


@dataclass
class FolderOptions:
    #: masks: ``index`` (band 1 holds 0..K-1), ``color`` (RGB, one ``colors`` entry per class, other
    #: colours -> ignore) or ``auto`` (colour when the mask has 3+ bands)
    mask_encoding: Literal["auto", "index", "color"] = "auto"
    #: colour masks: largest per-channel difference from a class colour still read as that class
    #: (anti-aliased or JPEG-compressed masks); 0 = exact match
    color_tolerance: int = 0


def color_clash(colors: Sequence[str], tolerance: int) -> tuple[str, str, int] | None:
    """Two class colours one pixel could match under ``tolerance`` (per-channel distance at most
    ``2 * tolerance``) and their distance, or None."""
    for i, a in enumerate(colors):
        for b in colors[i + 1:]:
            distance = color_distance(a, b)
            if 0 < distance <= 2 * tolerance:  # a repeated colour is refused where colour masks are read
                return a, b, distance
    return None


@register_dataset
class Folder(DatasetSpec):
    name = "folder"
    options = FolderOptions
    title = "a folder dataset"
    layout = "<root>/images + <root>/masks, or <root>/{train,val}/{images,masks} (matching file names)"

    def validate(self, ds: DatasetConfig) -> None:
        """``dataset.color_tolerance``: 0-255, and small enough that no pixel matches two classes."""
        tolerance = ds.color_tolerance
        if not 0 <= tolerance <= 255:
            raise ConfigError(f"config key 'dataset.color_tolerance' must be 0-255 (largest per-channel difference "
                              f"from a class colour), got {tolerance}; e.g. dataset.color_tolerance=8")
        clash = color_clash(ds.colors, tolerance) if tolerance else None
        if clash is not None:
            a, b, distance = clash
            raise ConfigError(f"config key 'dataset.color_tolerance' {tolerance} lets one pixel match both {a} and {b} "
                              f"(at most {distance} apart per channel); use at most {(distance - 1) // 2}")

    def _pairs_in(self, images: Path, masks: Path, ds: DatasetConfig) -> list[TilePair]:
        imgs, msks = _rasters(images), _rasters(masks)
        unmatched = sorted(set(imgs) - set(msks))
        if unmatched:
            raise DatasetError(
                f"{len(unmatched)} image(s) in {images} have no mask of the same name in {masks}, "
                f"e.g. {imgs[unmatched[0]].name}"
            )
        pairs = []
        for stem, img in imgs.items():
            h, w, count, mask_bands = check_pair(str(img), str(msks[stem]))
            if count < len(ds.bands):
                raise InputRasterError(
                    f"image {img} has {count} band(s) but dataset.bands lists {len(ds.bands)} ({', '.join(ds.bands)})"
                )
            pairs.append(TilePair(stem, str(img), str(msks[stem]), h, w, tuple(range(1, len(ds.bands) + 1)), self.name,
                                  label_colors(ds, str(msks[stem]), mask_bands), ds.color_tolerance))
        if not pairs:
            raise DatasetNotFoundError(f"no rasters ({', '.join(RASTER_SUFFIXES)}) in {images}")
        return pairs

    def layout_of(self, root: Path) -> dict[str, tuple[Path, Path]]:
        """Which ``(images, masks)`` folders or single files exist for each split under ``root``."""
        if not root.is_dir():
            raise DatasetNotFoundError(f"dataset folder {root} does not exist; expected {self.layout}")
        found = {}
        for split in SPLITS:
            if (root / split / "images").is_dir() and (root / split / "masks").is_dir():
                found[split] = (root / split / "images", root / split / "masks")
        if "train" not in found and (root / "images").is_dir() and (root / "masks").is_dir():
            found["all"] = (root / "images", root / "masks")
        if not found:
            single = _rasters(root)
            if "image" in single and "mask" in single:
                found["single"] = (single["image"], single["mask"])
        if not found:
            raise DatasetNotFoundError(
                f"no images/masks folders under {root}; expected {self.layout}, or image.tif + mask.tif")
        return found

    def pairs(self, ds: DatasetConfig, split: str, download: bool = False) -> list[TilePair]:
        """Pairs of a user folder for ``split``; without a ``val`` folder, val is held out of train."""
        root = Path(ds.root or "")
        layout = self.layout_of(root)
        if "single" in layout:
            img, msk = layout["single"]
            if split != "train":
                raise DatasetNotFoundError(f"{root} holds one image/mask pair: it has no {split} split; use {self.layout}")
            h, w, _, mask_bands = check_pair(str(img), str(msk))
            return [TilePair(root.name, str(img), str(msk), h, w, tuple(range(1, len(ds.bands) + 1)), self.name,
                             label_colors(ds, str(msk), mask_bands), ds.color_tolerance)]
        if split in layout:
            return self._pairs_in(*layout[split], ds)
        if split == "test":
            raise DatasetNotFoundError(f"{root} has no test split (expected {root}/test/images + {root}/test/masks)")
        source = layout.get("train", layout.get("all"))
        assert source is not None
        return split_holdout(self._pairs_in(*source, ds), split, ds.val_fraction)
