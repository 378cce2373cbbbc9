"""LoveDA (Wang et al., NeurIPS 2021 Datasets and Benchmarks track): 0.3 m RGB, 1024 x 1024 tiles.

7 land-cover classes; raw mask value 0 is no-data (-> ignore), 1..7 are the classes 0..6.
Train/Val/Test splits, each with Urban and Rural scenes; Test masks are withheld.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from rasterio import DatasetReader
from rasterio.windows import Window

from rsseg.config import DatasetConfig
from rsseg.data.datasets.base import DatasetSpec, register_dataset
from rsseg.data.raster import TilePair, raster_info
from rsseg.errors import DatasetNotFoundError, LabelError


@dataclass
class LoveDAOptions:
    #: LoveDA scene filter: urban, rural or both
    scene: Literal["urban", "rural", "both"] = "both"


def decode_loveda(raw: np.ndarray, source: str, ignore_index: int) -> np.ndarray:
    """LoveDA raw mask (0 no-data, 1..7 classes) -> 0..6 with no-data -> ``ignore_index``."""
    bad = np.setdiff1d(np.unique(raw), np.arange(0, 8))
    if bad.size:
        raise LabelError(f"LoveDA mask {source} holds values {bad.tolist()} outside 0..7 (0 = no-data, 1..7 classes)")
    out = raw.astype(np.int16) - 1
    out[raw == 0] = ignore_index
    return out.astype(np.uint8)


@register_dataset
class LoveDA(DatasetSpec):
    name = "loveda"
    title = "LoveDA"
    classes = ("background", "building", "road", "water", "barren", "forest", "agriculture")
    # The palette of the LoveDA reference code (Junjue-Wang/LoveDA, COLOR_MAP in data/loveda.py).
    colors = ("#ffffff", "#ff0000", "#ffff00", "#0000ff", "#9f81b7", "#00ff00", "#ffc380")
    file_bands = ("red", "green", "blue")
    bands = ("red", "green", "blue")
    gsd = 0.3
    layout = "<root>/{Train,Val,Test}/{Urban,Rural}/{images_png,masks_png}/*.png"
    download_hint = ("Train.zip, Val.zip, Test.zip from https://zenodo.org/records/5706578 unzipped into "
                     "dataset.root; from Python, rsseg.data.build_datamodule(cfg, download=True) fetches them "
                     "through TorchGeo")
    #: the only dataset TorchGeo can fetch for rsseg (``build_datamodule(cfg, download=True)``)
    downloadable = True
    options = LoveDAOptions

    def pairs(self, ds: DatasetConfig, split: str, download: bool = False) -> list[TilePair]:
        """LoveDA tiles of ``split`` for ``ds.scene`` (urban, rural or both); Test has no masks."""
        root = Path(ds.root or "")
        scenes = ["urban", "rural"] if ds.scene == "both" else [ds.scene]
        dirs = [root / split.capitalize() / s.capitalize() for s in scenes]
        if download and not all(d.is_dir() for d in dirs):
            from torchgeo.datasets import LoveDA as TorchGeoLoveDA  # imported here: torchgeo is slow to import

            TorchGeoLoveDA(root=str(root), split=split, scene=scenes, download=True)
        missing = [str(d) for d in dirs if not (d / "images_png").is_dir()]
        if missing:
            raise self.not_found(f"LoveDA not found: {', '.join(missing)} missing")
        bands = self.band_indexes(ds.bands)
        pairs = []
        for d in dirs:
            for img in sorted((d / "images_png").glob("*.png")):
                mask = d / "masks_png" / img.name
                if split != "test" and not mask.is_file():
                    raise DatasetNotFoundError(
                        f"LoveDA image {img} has no mask {mask}; re-extract the {split.capitalize()}.zip archive")
                h, w, _, _ = raster_info(str(img))
                pairs.append(TilePair(f"{d.name.lower()}/{img.stem}", str(img), str(mask) if split != "test" else None,
                                      h, w, bands, self.name))
        if not pairs:
            raise self.not_found(f"no LoveDA images under {', '.join(str(d) for d in dirs)}")
        return pairs

    def decode_labels(self, src: DatasetReader, window: Window | None, num_classes: int,
                      ignore_index: int) -> np.ndarray:
        return decode_loveda(src.read(1, window=window), src.name, ignore_index)
