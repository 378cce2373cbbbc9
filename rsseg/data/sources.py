"""Finding a dataset's image/label pairs on disk, per split.

Splits are ``train``, ``val`` and ``test``. Where a dataset has no validation split of its own
(ISPRS, a folder without ``val/``), ``val`` is a deterministic held-out subset of the training
files (:func:`holdout`), never the test set. LoveDA's ``val`` is its real Val split.
"""

from __future__ import annotations

import os
import random
import zipfile
from collections.abc import Sequence
from pathlib import Path

from rsseg.config import DatasetConfig
from rsseg.data.defaults import FILE_BANDS
from rsseg.data.raster import TilePair, check_pair, raster_info
from rsseg.errors import RsSegError

SPLITS = ("train", "val", "test")
RASTER_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2")
ISPRS_URL = "https://www.isprs.org/resources/datasets/benchmarks/UrbanSemLab/default.aspx"

ISPRS_FILES = {
    "potsdam": {
        "image_zip": "4_Ortho_RGBIR.zip",
        "label_zip": "5_Labels_all.zip",
        "eroded_zip": "5_Labels_all_noBoundary.zip",
        "image_dir": "4_Ortho_RGBIR",
        "image": "{}_RGBIR.tif",
        "label": "{}_label.tif",
        "eroded": "{}_label_noBoundary.tif",
    },
    "vaihingen": {
        "image_zip": "ISPRS_semantic_labeling_Vaihingen.zip",
        "label_zip": "ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE.zip",
        "eroded_zip": "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE.zip",
        "image_dir": "top",
        "image": "{}.tif",
        "label": "{}.tif",
        "eroded": "{}_noBoundary.tif",
    },
}


def holdout(n: int, fraction: float, seed: int = 0) -> list[int]:
    """Indices (sorted) of the ``max(1, round(fraction * n))`` items held out for validation.

    Deterministic for a given ``n``/``fraction``/``seed`` so every run validates on the same files.
    """
    if n < 2:
        raise RsSegError(
            f"cannot hold out a validation set from {n} training file(s); add more files or a val/ folder "
            "(<root>/val/images + <root>/val/masks)"
        )
    k = min(n - 1, max(1, round(fraction * n)))
    return sorted(random.Random(seed).sample(range(n), k))


def _split_holdout(pairs: list[TilePair], split: str, fraction: float) -> list[TilePair]:
    val = set(holdout(len(pairs), fraction))
    keep = (lambda i: i in val) if split == "val" else (lambda i: i not in val)
    return [p for i, p in enumerate(pairs) if keep(i)]


def _band_indexes(file_bands: Sequence[str], wanted: Sequence[str]) -> tuple[int, ...]:
    return tuple(list(file_bands).index(b) + 1 for b in wanted)


# ---------------------------------------------------------------------------------------------- LoveDA
LOVEDA_LAYOUT = "<root>/{Train,Val,Test}/{Urban,Rural}/{images_png,masks_png}/*.png"


def loveda_pairs(ds: DatasetConfig, split: str, download: bool = False) -> list[TilePair]:
    """LoveDA tiles of ``split`` for ``ds.scene`` (urban, rural or both); Test has no masks."""
    root = Path(ds.root or "")
    scenes = ["urban", "rural"] if ds.scene == "both" else [ds.scene]
    dirs = [root / split.capitalize() / s.capitalize() for s in scenes]
    if download and not all(d.is_dir() for d in dirs):
        from torchgeo.datasets import LoveDA  # imported here: torchgeo is slow to import

        LoveDA(root=str(root), split=split, scene=scenes, download=True)
    missing = [str(d) for d in dirs if not (d / "images_png").is_dir()]
    if missing:
        raise RsSegError(
            f"LoveDA not found: {', '.join(missing)} missing. Expected layout {LOVEDA_LAYOUT}; get Train.zip, "
            "Val.zip, Test.zip from https://zenodo.org/records/5706578 and unzip them into dataset.root "
            "(or pass --download)"
        )
    bands = _band_indexes(FILE_BANDS["loveda"], ds.bands)
    pairs = []
    for d in dirs:
        for img in sorted((d / "images_png").glob("*.png")):
            mask = d / "masks_png" / img.name
            if split != "test" and not mask.is_file():
                raise RsSegError(f"LoveDA image {img} has no mask {mask}; re-extract the {split.capitalize()}.zip archive")
            h, w, _, _ = raster_info(str(img))
            pairs.append(TilePair(f"{d.name.lower()}/{img.stem}", str(img), str(mask) if split != "test" else None,
                                  h, w, bands, "loveda"))
    if not pairs:
        raise RsSegError(f"no LoveDA images under {', '.join(str(d) for d in dirs)} (layout {LOVEDA_LAYOUT})")
    return pairs


# ---------------------------------------------------------------------------------------------- ISPRS
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
                raise RsSegError(f"{zpath} is not a valid zip archive; download it again from {ISPRS_URL}") from None
        return cache[zip_name].get(fname)
    return None


def isprs_pairs(ds: DatasetConfig, split: str, eroded: bool = False) -> list[TilePair]:
    """ISPRS Potsdam/Vaihingen tiles in TorchGeo's split lists (read extracted or straight from the zips).

    ``train``/``val`` split TorchGeo's training tiles with :func:`holdout`; ``test`` is the benchmark
    test set. ``eroded`` uses the noBoundary label set (boundaries -> ignore), as published numbers do.
    """
    name = ds.name
    spec = ISPRS_FILES[name]
    root = Path(ds.root or "")
    if name == "potsdam":
        from torchgeo.datasets.potsdam import Potsdam2D as tg
    else:
        from torchgeo.datasets.vaihingen import Vaihingen2D as tg
    ids = [t[:-4] if t.endswith(".tif") else t for t in tg.splits["test" if split == "test" else "train"]]
    label_zip, label_fmt = (spec["eroded_zip"], spec["eroded"]) if eroded else (spec["label_zip"], spec["label"])
    cache: dict[str, dict[str, str]] = {}
    pairs, missing = [], []
    bands = _band_indexes(FILE_BANDS[name], ds.bands)
    for tile in ids:
        image = _locate(root, spec["image_zip"], spec["image_dir"], spec["image"].format(tile), cache)
        label = _locate(root, label_zip, None, label_fmt.format(tile), cache, exclude=spec["image_dir"])
        if image is None or label is None:
            missing.append(tile)
            continue
        h, w, _ = check_pair(image, label)
        pairs.append(TilePair(tile, image, label, h, w, bands, "isprs"))
    if not pairs:
        raise RsSegError(
            f"ISPRS {name.capitalize()} not found under {root}: expected {spec['image_zip']} and {label_zip} there "
            f"(or their extracted contents, {spec['image_dir']}/{spec['image'].format('<tile>')} and "
            f"{label_fmt.format('<tile>')}). Request the data from the ISPRS 2D semantic labeling benchmark, {ISPRS_URL}"
        )
    if split == "test":
        return pairs
    return _split_holdout(pairs, split, ds.val_fraction)


# ---------------------------------------------------------------------------------------------- folder
FOLDER_LAYOUT = "<root>/images + <root>/masks, or <root>/{train,val}/{images,masks} (matching file names)"


def _rasters(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in RASTER_SUFFIXES and p.is_file()}


def _folder_pairs_in(images: Path, masks: Path, ds: DatasetConfig) -> list[TilePair]:
    imgs, msks = _rasters(images), _rasters(masks)
    unmatched = sorted(set(imgs) - set(msks))
    if unmatched:
        raise RsSegError(
            f"{len(unmatched)} image(s) in {images} have no mask of the same name in {masks}, e.g. {imgs[unmatched[0]].name}"
        )
    pairs = []
    for stem, img in imgs.items():
        h, w, count = check_pair(str(img), str(msks[stem]))
        if count < len(ds.bands):
            raise RsSegError(
                f"image {img} has {count} band(s) but dataset.bands lists {len(ds.bands)} ({', '.join(ds.bands)})"
            )
        # A folder's files hold the configured bands first, in order (extra bands, e.g. alpha, are skipped).
        pairs.append(TilePair(stem, str(img), str(msks[stem]), h, w, tuple(range(1, len(ds.bands) + 1)), "index"))
    return pairs


def folder_layout(root: Path) -> dict[str, tuple[Path, Path]]:
    """Which ``(images, masks)`` folders or single files exist for each split under ``root``."""
    if not root.is_dir():
        raise RsSegError(f"dataset folder {root} does not exist; expected {FOLDER_LAYOUT}")
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
        raise RsSegError(f"no images/masks folders under {root}; expected {FOLDER_LAYOUT}, or image.tif + mask.tif")
    return found


def folder_pairs(ds: DatasetConfig, split: str) -> list[TilePair]:
    """Pairs of a user folder for ``split``; without a ``val`` folder, val is held out of train."""
    root = Path(ds.root or "")
    layout = folder_layout(root)
    if "single" in layout:
        img, msk = layout["single"]
        if split != "train":
            raise RsSegError(f"{root} holds one image/mask pair: it has no {split} split; use {FOLDER_LAYOUT}")
        h, w, _ = check_pair(str(img), str(msk))
        return [TilePair(root.name, str(img), str(msk), h, w, tuple(range(1, len(ds.bands) + 1)), "index")]
    if split in layout:
        pairs = _folder_pairs_in(*layout[split], ds)
        if not pairs:
            raise RsSegError(f"no rasters ({', '.join(RASTER_SUFFIXES)}) in {layout[split][0]}")
        return pairs
    if split == "test":
        raise RsSegError(f"{root} has no test split (expected {root}/test/images + {root}/test/masks)")
    source = layout.get("train", layout.get("all"))
    assert source is not None
    pairs = _folder_pairs_in(*source, ds)
    if not pairs:
        raise RsSegError(f"no rasters ({', '.join(RASTER_SUFFIXES)}) in {source[0]}")
    return _split_holdout(pairs, split, ds.val_fraction)


def layout_hint(name: str) -> str:
    """Where a dataset's files are expected and where to get them."""
    if name == "loveda":
        return f"LoveDA expects {LOVEDA_LAYOUT} (Train.zip/Val.zip/Test.zip from https://zenodo.org/records/5706578)"
    if name in ISPRS_FILES:
        spec = ISPRS_FILES[name]
        return (f"{name.capitalize()} expects {spec['image_zip']} and {spec['label_zip']} (or their extracted contents) "
                f"from the ISPRS 2D semantic labeling benchmark, {ISPRS_URL}")
    return f"a folder dataset expects {FOLDER_LAYOUT}"


def dataset_pairs(ds: DatasetConfig, split: str, download: bool = False, eroded: bool = False) -> list[TilePair]:
    """All pairs of ``split`` for a resolved dataset config (see ``defaults.resolve_dataset_config``)."""
    if split not in SPLITS:
        raise RsSegError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if ds.root is None:
        raise RsSegError("config key 'dataset.root' is not set: point it at the dataset folder")
    if not Path(ds.root).is_dir() and not (download and ds.name == "loveda"):
        raise RsSegError(f"dataset root {ds.root} does not exist (config key 'dataset.root'); {layout_hint(ds.name)}")
    if ds.name == "loveda":
        return loveda_pairs(ds, split, download)
    if ds.name in ISPRS_FILES:
        return isprs_pairs(ds, split, eroded)
    return folder_pairs(ds, split)
