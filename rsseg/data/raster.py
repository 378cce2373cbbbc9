"""Reading image/label pairs window by window, and decoding each dataset's label encoding.

Everything is read through rasterio (GDAL), so GeoTIFF, PNG and members of zip archives
(``/vsizip/...`` paths, how ISPRS archives are read without extracting them) go through one code
path. Labels come out as uint8 ``[H, W]`` with classes ``0..K-1`` and ``ignore_index`` (255).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.enums import MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from rsseg.errors import RsSegError

#: how a label raster encodes classes
LABEL_ENCODINGS = ("index", "loveda", "isprs")


@dataclass(frozen=True)
class TilePair:
    """One image raster and its label raster (``mask`` is None for unlabelled test tiles)."""

    name: str
    image: str
    mask: str | None
    height: int
    width: int
    #: 1-based band indexes read from ``image``, in model order
    band_indexes: tuple[int, ...]
    #: one of :data:`LABEL_ENCODINGS`
    encoding: str = "index"


def _open(path: str) -> rasterio.DatasetReader:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as exc:
        raise RsSegError(f"cannot read raster {path}: {exc} (is it a GeoTIFF/PNG and readable?)") from None


def raster_info(path: str) -> tuple[int, int, int, object]:
    """``(height, width, band_count, crs)`` of a raster, reading only its header."""
    with _open(path) as src:
        return src.height, src.width, src.count, src.crs


def check_pair(image: str, mask: str) -> tuple[int, int, int]:
    """Check that ``image`` and ``mask`` cover the same grid; return ``(height, width, bands)``.

    Raises RsSegError naming both files when their sizes differ or both carry different CRSs (a
    PNG label beside a GeoTIFF image has no CRS, which is fine).
    """
    ih, iw, ic, icrs = raster_info(image)
    mh, mw, _, mcrs = raster_info(mask)
    if (ih, iw) != (mh, mw):
        raise RsSegError(
            f"image {image} is {iw}x{ih} pixels but its mask {mask} is {mw}x{mh}; "
            "each mask must cover its image pixel for pixel"
        )
    if icrs and mcrs and icrs != mcrs:
        raise RsSegError(
            f"image {image} (CRS {icrs.to_string()}) and mask {mask} (CRS {mcrs.to_string()}) are in "
            "different CRSs; reproject the mask onto the image grid (e.g. gdalwarp -tr/-te matching the image)"
        )
    return ih, iw, ic


def _image_valid(src: rasterio.DatasetReader, window: Window | None) -> np.ndarray | None:
    """Boolean ``[h, w]`` of pixels with data, or None when the raster declares no nodata at all."""
    flags = src.mask_flag_enums
    if all(f == [MaskFlags.all_valid] for f in flags):
        return None
    # GDAL's dataset mask is valid where any band is valid, so a dark pixel in one band stays data.
    return src.dataset_mask(window=window) > 0


def read_image(pair: TilePair, window: Window | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw image ``[C, h, w]`` (file dtype) and its validity mask ``[h, w]`` (None: all valid)."""
    with _open(pair.image) as src:
        if max(pair.band_indexes) > src.count:
            raise RsSegError(f"image {pair.image} has {src.count} bands; bands {list(pair.band_indexes)} were requested")
        return src.read(list(pair.band_indexes), window=window), _image_valid(src, window)


def decode_loveda(raw: np.ndarray, source: str, ignore_index: int = 255) -> np.ndarray:
    """LoveDA raw mask (0 no-data, 1..7 classes) -> 0..6 with no-data -> ``ignore_index``."""
    bad = np.setdiff1d(np.unique(raw), np.arange(0, 8))
    if bad.size:
        raise RsSegError(f"LoveDA mask {source} holds values {bad.tolist()} outside 0..7 (0 = no-data, 1..7 classes)")
    out = raw.astype(np.int16) - 1
    out[raw == 0] = ignore_index
    return out.astype(np.uint8)


# Every ISPRS colour has channels 0 or 255, so thresholding each channel at 128 gives a 3-bit code
# per pixel; that also absorbs the few off-by-a-little colours some label files carry. Black (the
# eroded sets' boundary colour) and any other code map to ignore.
_ISPRS_CODE_TO_CLASS = {4 * (r > 127) + 2 * (g > 127) + (b > 127): k for k, (r, g, b) in enumerate(
    ((255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0)))}


def decode_isprs(rgb: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """ISPRS colour labels ``[3, H, W]`` -> class indices 0..5 (see ``defaults.ISPRS_RGB``); other colours -> ignore."""
    code = (rgb[0] > 127).astype(np.uint8) * 4 + (rgb[1] > 127) * 2 + (rgb[2] > 127)
    lut = np.full(8, ignore_index, dtype=np.uint8)
    for c, k in _ISPRS_CODE_TO_CLASS.items():
        lut[c] = k
    return lut[code]


def check_index_mask(raw: np.ndarray, num_classes: int, ignore_index: int, source: str) -> np.ndarray:
    """Return ``raw`` as uint8 after checking every value is a class or ``ignore_index``."""
    values = np.unique(raw)
    bad = values[((values >= num_classes) & (values != ignore_index)) | (values < 0)]
    if bad.size:
        raise RsSegError(
            f"mask {source} holds values {bad.tolist()[:20]} outside the {num_classes} classes 0..{num_classes - 1} "
            f"(and not the ignore value {ignore_index}); fix the mask or list more classes in dataset.classes"
        )
    return raw.astype(np.uint8)


def read_mask(pair: TilePair, num_classes: int, ignore_index: int, window: Window | None = None) -> np.ndarray:
    """Labels ``[h, w]`` uint8 in rsseg's encoding (classes 0..K-1, ``ignore_index``)."""
    assert pair.mask is not None
    with _open(pair.mask) as src:
        if pair.encoding == "isprs":
            if src.count < 3:
                raise RsSegError(f"ISPRS label {pair.mask} has {src.count} band(s); expected the RGB colour-coded labels")
            return decode_isprs(src.read([1, 2, 3], window=window), ignore_index)
        raw = src.read(1, window=window)
        nodata = src.nodata
    if pair.encoding == "loveda":
        return decode_loveda(raw, pair.mask, ignore_index)
    if nodata is not None and nodata >= num_classes:
        raw = np.where(raw == nodata, ignore_index, raw)
    elif nodata is not None:
        # Label rasters are often written with nodata=0 by habit; turning class 0 into ignore would
        # silently drop a class, so the class wins.
        warnings.warn(f"mask {pair.mask} declares nodata={nodata:g}, which is also a class index; "
                      "reading it as that class", stacklevel=2)
    return check_index_mask(raw, num_classes, ignore_index, pair.mask)


def read_pair(
    pair: TilePair, num_classes: int, ignore_index: int, window: Window | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw image ``[C, h, w]`` and labels ``[h, w]`` (None without a mask); image nodata -> ignore."""
    image, valid = read_image(pair, window)
    if pair.mask is None:
        return image, None
    mask = read_mask(pair, num_classes, ignore_index, window)
    if valid is not None:
        mask[~valid] = ignore_index
    return image, mask
