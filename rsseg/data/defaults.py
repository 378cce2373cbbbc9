"""Per-dataset label schemes, band layouts and normalisation constants.

LoveDA (Wang et al., NeurIPS 2021 Datasets track): 7 land-cover classes; raw mask value 0 is
no-data, 1..7 are the classes. ISPRS Potsdam / Vaihingen 2D semantic labeling benchmark: 6 classes
colour-coded in RGB label rasters (the benchmark's own order: impervious surfaces first, clutter
last, which is the order published per-class tables use).
"""

from __future__ import annotations

import copy
from typing import Any

from rsseg.config import DatasetConfig
from rsseg.errors import RsSegError

#: ImageNet statistics in [0, 1] units, RGB order (torchvision's pretrained weights).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: used for bands beyond the first three under ``normalization: imagenet`` (e.g. NIR): a pretrained
#: RGB stem has no statistics for them, and 0.5 / 0.25 maps [0, 1] reflectance to about [-2, 2].
EXTRA_BAND_MEAN = 0.5
EXTRA_BAND_STD = 0.25

LOVEDA_CLASSES = ("background", "building", "road", "water", "barren", "forest", "agriculture")
# The palette of the LoveDA reference code (Junjue-Wang/LoveDA, COLOR_MAP in data/loveda.py).
LOVEDA_COLORS = ("#ffffff", "#ff0000", "#ffff00", "#0000ff", "#9f81b7", "#00ff00", "#ffc380")

ISPRS_CLASSES = ("impervious surfaces", "building", "low vegetation", "tree", "car", "clutter")
ISPRS_RGB = ((255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0))
ISPRS_COLORS = tuple("#{:02x}{:02x}{:02x}".format(*c) for c in ISPRS_RGB)

#: band names of the files each dataset ships, in file order
FILE_BANDS: dict[str, tuple[str, ...]] = {
    "loveda": ("red", "green", "blue"),
    "potsdam": ("red", "green", "blue", "nir"),  # 4_Ortho_RGBIR
    "vaihingen": ("nir", "red", "green"),  # IRRG false-colour orthophotos
}

_DEFAULTS: dict[str, dict[str, Any]] = {
    "loveda": {"classes": list(LOVEDA_CLASSES), "colors": list(LOVEDA_COLORS), "bands": ["red", "green", "blue"], "gsd": 0.3},
    "potsdam": {"classes": list(ISPRS_CLASSES), "colors": list(ISPRS_COLORS), "bands": ["red", "green", "blue"], "gsd": 0.05},
    "vaihingen": {"classes": list(ISPRS_CLASSES), "colors": list(ISPRS_COLORS), "bands": ["nir", "red", "green"], "gsd": 0.09},
}


def dataset_defaults(name: str) -> dict[str, Any]:
    """Dataset-section defaults (``classes``, ``colors`` as '#rrggbb', ``bands``, ``gsd`` in metres).

    Defined for the benchmark datasets loveda, potsdam and vaihingen; a ``folder`` dataset takes its
    classes from the config.
    """
    if name not in _DEFAULTS:
        raise RsSegError(f"no built-in defaults for dataset {name!r}; known: {', '.join(_DEFAULTS)}")
    return copy.deepcopy(_DEFAULTS[name])


def resolve_dataset_config(ds: DatasetConfig) -> DatasetConfig:
    """Return a copy of ``ds`` with a benchmark dataset's classes, colours, bands and gsd filled in.

    A key still at the generic :class:`DatasetConfig` default takes the dataset's value; a key the
    user set is kept, but a class list of the wrong length is an error (the label encoding is fixed
    by the dataset).
    """
    ds = copy.deepcopy(ds)
    if ds.name in ("folder", "geo", "torchgeo"):  # classes, colours and bands come from the config
        return ds
    generic = DatasetConfig()
    d = dataset_defaults(ds.name)
    if ds.classes == generic.classes:
        ds.classes = d["classes"]
    if ds.colors == generic.colors:
        ds.colors = d["colors"]
    if ds.bands == generic.bands:
        ds.bands = d["bands"]
    if ds.gsd is None:
        ds.gsd = d["gsd"]
    if len(ds.classes) != len(d["classes"]) or len(ds.colors) != len(d["classes"]):
        raise RsSegError(
            f"dataset {ds.name} has {len(d['classes'])} classes ({', '.join(d['classes'])}) but the config "
            f"lists {len(ds.classes)} classes / {len(ds.colors)} colours; remove dataset.classes and "
            "dataset.colors from the config to use the defaults"
        )
    available = FILE_BANDS[ds.name]
    unknown = [b for b in ds.bands if b not in available]
    if unknown:
        raise RsSegError(
            f"dataset {ds.name} has bands {', '.join(available)}; config key 'dataset.bands' asks for "
            f"{', '.join(unknown)}"
        )
    return ds
