"""Reading dataset rasters: headers, image windows, index-coded and colour-coded labels.

Everything is read through rasterio (GDAL), so GeoTIFF, PNG and members of zip archives
(``/vsizip/...`` paths, how ISPRS archives are read without extracting them) go through one code
path. Labels come out as uint8 ``[H, W]`` with classes ``0..K-1`` and ``ignore_index``
(:data:`rsseg.constants.IGNORE_INDEX`); how a dataset encodes them is its spec's
``decode_labels`` (:mod:`rsseg.data.datasets`), index-coded labels by default; colour-coded
masks (one RGB colour per class, as ISPRS ships them) go through :func:`read_color_codes` and
:func:`decode_codes`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import rasterio
from rasterio.enums import MaskFlags
from rasterio.errors import RasterioError
from rasterio.windows import Window

from rsseg.config import hex_rgb
from rsseg.errors import InputRasterError, LabelError, LabelWarning
from rsseg.io import open_raster

#: ``(open label raster, window, num_classes, ignore_index) -> labels [h, w] uint8``
LabelDecoder = Callable[["rasterio.DatasetReader", "Window | None", int, int], np.ndarray]


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
    #: registered name of the dataset the pair belongs to
    dataset: str = "folder"
    #: RGB colour of each class when ``mask`` is colour-coded (:func:`read_color_labels`); empty:
    #: ``decoder`` decodes it
    label_colors: tuple[tuple[int, int, int], ...] = ()
    #: largest per-channel difference from ``label_colors`` still read as that class (0: exact)
    color_tolerance: int = 0
    #: the dataset's label decoder ``(src, window, num_classes, ignore_index) -> labels``
    #: (:meth:`DatasetSpec.decode_labels`, set by :meth:`DatasetSpec.find_pairs`); None: index-coded
    decoder: LabelDecoder | None = field(default=None, compare=False)


def raster_info(path: str) -> tuple[int, int, int, object]:
    """``(height, width, band_count, crs)`` of a raster, reading only its header."""
    with open_raster(path, "dataset") as src:
        return src.height, src.width, src.count, src.crs


def check_pair(image: str, mask: str) -> tuple[int, int, int, int]:
    """Check that ``image`` and ``mask`` cover the same grid; return ``(height, width, image bands,
    mask bands)``.

    Raises InputRasterError naming both files when their sizes differ or both carry different CRSs (a
    PNG label beside a GeoTIFF image has no CRS, which is fine).
    """
    ih, iw, ic, icrs = raster_info(image)
    mh, mw, mc, mcrs = raster_info(mask)
    if (ih, iw) != (mh, mw):
        raise InputRasterError(
            f"image {image} is {iw}x{ih} pixels but its mask {mask} is {mw}x{mh}; "
            "each mask must cover its image pixel for pixel"
        )
    if icrs and mcrs and icrs != mcrs:
        raise InputRasterError(
            f"image {image} (CRS {icrs.to_string()}) and mask {mask} (CRS {mcrs.to_string()}) are in "
            "different CRSs; reproject the mask onto the image grid (e.g. gdalwarp -tr/-te matching the image)"
        )
    return ih, iw, ic, mc


def _image_valid(src: rasterio.DatasetReader, window: Window | None) -> np.ndarray | None:
    """Boolean ``[h, w]`` of pixels with data, or None when the raster declares no nodata at all."""
    flags = src.mask_flag_enums
    if all(f == [MaskFlags.all_valid] for f in flags):
        return None
    # GDAL's dataset mask is valid where any band is valid, so a dark pixel in one band stays data.
    return src.dataset_mask(window=window) > 0


def read_pixels[T](src: rasterio.DatasetReader, what: str, read: Callable[[], T]) -> T:
    """``read()`` on the open raster ``src``; a GDAL read failure (a truncated or corrupt file whose
    header opens fine) becomes an InputRasterError naming the file, not a traceback mid-training."""
    try:
        return read()
    except RasterioError as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else exc.__class__.__name__
        raise InputRasterError(f"cannot read the pixels of {what} {src.name}: {first}; the file is truncated or "
                               "corrupt: re-export it or remove it (and its partner) from the dataset") from None


def read_image(pair: TilePair, window: Window | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw image ``[C, h, w]`` (file dtype) and its validity mask ``[h, w]`` (None: all valid)."""
    with open_raster(pair.image, "dataset image") as src:
        if max(pair.band_indexes) > src.count:
            raise InputRasterError(f"image {pair.image} has {src.count} bands; bands {list(pair.band_indexes)} were requested")
        return read_pixels(src, "dataset image",
                           lambda: (src.read(list(pair.band_indexes), window=window), _image_valid(src, window)))


def check_index_mask(raw: np.ndarray, num_classes: int, ignore_index: int, source: str) -> np.ndarray:
    """Return ``raw`` as uint8 after checking every value is a class or ``ignore_index``."""
    values = np.unique(raw)
    bad = values[((values >= num_classes) & (values != ignore_index)) | (values < 0)]
    if bad.size:
        raise LabelError(
            f"mask {source} holds values {bad.tolist()[:20]} outside the {num_classes} classes 0..{num_classes - 1} "
            f"(and not the ignore value {ignore_index}); fix the mask or list more classes in dataset.classes"
        )
    return raw.astype(np.uint8)


def read_index_labels(src: rasterio.DatasetReader, window: Window | None, num_classes: int,
                      ignore_index: int) -> np.ndarray:
    """Labels ``[h, w]`` uint8 from band 1 of an index-coded label raster (values 0..K-1).

    The raster's declared nodata becomes ``ignore_index`` when it is not a class index.
    """
    raw = src.read(1, window=window)
    nodata = src.nodata
    if nodata is not None and nodata >= num_classes:
        raw = np.where(raw == nodata, ignore_index, raw)
    elif nodata is not None:
        # Label rasters are often written with nodata=0 by habit; turning class 0 into ignore would
        # silently drop a class, so the class wins.
        warnings.warn(f"mask {src.name} declares nodata={nodata:g}, which is also a class index; "
                      "reading it as that class", LabelWarning, stacklevel=3)
    return check_index_mask(raw, num_classes, ignore_index, src.name)


def rgb_codes(rgb: np.ndarray) -> np.ndarray:
    """``[3, ...]`` uint8 RGB -> one 24-bit code ``0xRRGGBB`` per pixel (uint32), so a colour is a
    single comparison and distinct colours can be counted with ``np.unique``."""
    if rgb.shape[0] != 3:
        raise ValueError(f"expected [3, h, w] colour labels, got shape {rgb.shape}")
    return (rgb[0].astype(np.uint32) << 16) | (rgb[1].astype(np.uint32) << 8) | rgb[2].astype(np.uint32)


def code_hex(code: int) -> str:
    """A 24-bit colour code as ``#rrggbb``."""
    return f"#{int(code):06x}"


def color_distance(a: str, b: str) -> int:
    """The largest per-channel difference of two ``#rrggbb`` colours: the distance
    ``dataset.color_tolerance`` bounds in :func:`decode_codes`."""
    return max(abs(x - y) for x, y in zip(hex_rgb(a), hex_rgb(b), strict=True))


def decode_codes(code: np.ndarray, colors: Sequence[tuple[int, int, int]], ignore_index: int,
                 tolerance: int = 0) -> np.ndarray:
    """24-bit colour codes (:func:`rgb_codes`) -> uint8 labels: class ``k`` where every channel is
    within ``tolerance`` of ``colors[k]`` (0: exactly ``colors[k]``), ``ignore_index`` elsewhere.

    The folder dataset refuses a tolerance under which one pixel could match two classes, so the
    order of the loop never decides a label.
    """
    out = np.full(code.shape, ignore_index, dtype=np.uint8)
    if tolerance <= 0:
        for k, (r, g, b) in enumerate(colors):
            out[code == ((r << 16) | (g << 8) | b)] = k
        return out
    channels = [((code >> shift) & 0xFF).astype(np.int16) for shift in (16, 8, 0)]
    for k, rgb in enumerate(colors):
        near = np.ones(code.shape, dtype=bool)
        for channel, value in zip(channels, rgb, strict=True):
            near &= np.abs(channel - value) <= tolerance
        out[near] = k
    return out


def decode_colors(rgb: np.ndarray, colors: Sequence[tuple[int, int, int]], ignore_index: int) -> np.ndarray:
    """Colour-coded labels ``[3, h, w]`` -> uint8 ``[h, w]``: class ``k`` where the pixel is exactly
    ``colors[k]``, ``ignore_index`` for every other colour."""
    return decode_codes(rgb_codes(rgb), colors, ignore_index)


def _palette(src: rasterio.DatasetReader) -> np.ndarray | None:
    """``[256, 3]`` uint8 RGB of a single-band 8-bit raster's colour table, or None without one."""
    if src.count != 1 or src.dtypes[0] != "uint8":
        return None
    try:
        cmap = src.colormap(1)
    except ValueError:  # no colour table
        return None
    table = np.zeros((256, 3), dtype=np.uint8)
    for index, rgba in cmap.items():
        table[index] = rgba[:3]
    return table


def has_palette(path: str) -> bool:
    """Whether ``path`` is a single-band 8-bit raster with a colour table (a paletted PNG/TIFF)."""
    with open_raster(path, "dataset label") as src:
        return _palette(src) is not None


def read_color_codes(src: rasterio.DatasetReader, window: Window | None) -> np.ndarray:
    """The colour of each pixel ``[h, w]`` as a 24-bit code (:func:`rgb_codes`) of a colour-coded
    label raster: bands 1-3 of an RGB(A) raster, or the colour table of a paletted one."""
    palette = _palette(src)
    if palette is not None:
        return rgb_codes(palette.T)[src.read(1, window=window)]
    if src.count < 3:
        raise LabelError(
            f"mask {src.name} has {src.count} band(s) and no colour table but colour-coded masks need RGB; "
            "set dataset.mask_encoding: index for masks holding class indices"
        )
    if src.dtypes[0] != "uint8":
        raise LabelError(f"colour mask {src.name} is {src.dtypes[0]}; colour-coded masks must be 8-bit RGB")
    return rgb_codes(src.read([1, 2, 3], window=window))
