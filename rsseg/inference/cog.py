"""The class/confidence raster writers: tiled GeoTIFF, then Cloud-Optimized GeoTIFF.

Outputs are first written as a tiled, compressed GeoTIFF in a temporary folder, band of rows by
band of rows (buffered to whole tile rows so no compressed tile is written twice), then copied
by GDAL's COG driver (overviews with ``mode`` resampling for class ids, ``average`` for
confidence) into :func:`rsseg.io.atomic_path`, so the target appears only when complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from rsseg.checkpoint import ModelMeta
from rsseg.config import hex_rgb
from rsseg.constants import IGNORE_INDEX as CLASS_NODATA  # class rasters' nodata = the ignore value
from rsseg.inference.windows import Span
from rsseg.io import atomic_path

#: block (tile) size of the output GeoTIFFs and COGs; column strips start at its multiples
BLOCK = 512
#: confidence is max probability x 255 >= 255 / K >= 1, so 0 is free for nodata
CONFIDENCE_NODATA = 0
#: the names a COG may end in
COG_SUFFIXES = (".tif", ".tiff")


def tiled_profile(src: rasterio.DatasetReader, nodata: int) -> dict[str, Any]:
    """Single-band uint8 tiled GeoTIFF on the same grid (size, CRS, transform) as ``src``.

    LZW, not DEFLATE: this is the temporary file, recompressed by :func:`to_cog`; LZW costs ~4x
    less CPU in the writer (which shares the cores with the model) and still keeps class maps
    small on disk.
    """
    profile: dict[str, Any] = dict(driver="GTiff", width=src.width, height=src.height, count=1, dtype="uint8",
                                   nodata=nodata, transform=src.transform, tiled=True, blockxsize=BLOCK,
                                   blockysize=BLOCK, compress="lzw", bigtiff="if_safer")
    if src.crs is not None:
        profile["crs"] = src.crs
    return profile


def describe_classes(dst: rasterio.io.DatasetWriter, meta: ModelMeta) -> None:
    """Palette (colour table), class names in tags and band description, of a class raster."""
    cmap = {i: (*hex_rgb(c), 255) for i, c in enumerate(meta.colors)}
    cmap[CLASS_NODATA] = (0, 0, 0, 0)
    dst.write_colormap(1, cmap)
    dst.update_tags(CLASS_NAMES=",".join(meta.classes), **{f"CLASS_{i}": n for i, n in enumerate(meta.classes)})
    dst.set_band_description(1, "class: " + ", ".join(f"{i}={n}" for i, n in enumerate(meta.classes)))


def describe_confidence(dst: rasterio.io.DatasetWriter) -> None:
    """Band description, and scale/offset so GDAL/QGIS read the stored 0..255 as probability 0..1."""
    dst.set_band_description(1, "confidence: probability of the predicted class (stored x 255; 0 = nodata)")
    dst.scales = (1 / 255,)
    dst.offsets = (0.0,)
    dst.units = ("probability",)


class RowWriter:
    """Write bands of rows to a tiled GeoTIFF, buffering up to whole tile rows.

    Bands arrive top to bottom per column strip (a band's columns; the whole width unless the
    raster streams in column strips, whose borders are multiples of :data:`BLOCK`, so no
    compressed tile is written twice).
    """

    def __init__(self, dst: rasterio.io.DatasetWriter) -> None:
        self.dst = dst
        #: per column strip: first raster row not yet written, rows buffered
        self.strips: dict[Span, tuple[int, list[np.ndarray]]] = {}

    def write(self, window: Window, band: np.ndarray) -> None:
        columns = Span(int(window.col_off), int(window.col_off + window.width))
        row, pending = self.strips.get(columns, (0, []))
        if int(window.row_off) != row + sum(p.shape[0] for p in pending):
            raise ValueError(f"rows must arrive in order: got row {window.row_off} of columns "
                             f"[{columns.start}, {columns.stop})")
        pending.append(band)
        buffered = sum(p.shape[0] for p in pending)
        full = buffered if row + buffered == self.dst.height else (buffered // BLOCK) * BLOCK
        if full:
            data = np.concatenate(pending) if len(pending) > 1 else pending[0]
            self.dst.write(data[:full], 1, window=Window(columns.start, row, columns.size, full))
            pending = [data[full:]] if full < buffered else []
            row += full
        self.strips[columns] = (row, pending)


def to_cog(tiled_path: str | Path, target: str | Path, resampling: str,
           sidecars: dict[Path, str] | None = None) -> Path:
    """Copy a tiled GeoTIFF to a Cloud-Optimized GeoTIFF at ``target``, atomically.

    ``sidecars`` (path -> text, e.g. the ``.aux.xml`` and ``.qml`` of :mod:`rsseg.inference.styles`)
    are written, each atomically, once the COG is complete and before it is renamed onto
    ``target``: a failure leaves neither, and the raster never appears without its sidecars.
    """
    target = Path(target)
    with atomic_path(target) as tmp:
        rasterio.shutil.copy(str(tiled_path), str(tmp), driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=str(BLOCK),
                             RESAMPLING=resampling.upper(), OVERVIEW_RESAMPLING=resampling.upper(),
                             BIGTIFF="IF_SAFER")
        for path, text in (sidecars or {}).items():
            with atomic_path(path) as side:
                side.write_text(text, encoding="utf-8")
    return target
