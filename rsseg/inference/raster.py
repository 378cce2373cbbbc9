"""Raster input checks and the class/confidence raster writers (tiled GeoTIFF -> COG).

Outputs are first written as a tiled, compressed GeoTIFF in a temporary folder, band of rows by
band of rows (buffered to whole tile rows so no compressed tile is written twice), then copied
by GDAL's COG driver (overviews with ``mode`` resampling for class ids, ``average`` for
confidence) into :func:`rsseg.io.atomic_path`, so the target appears only when complete.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.enums
import rasterio.shutil
from rasterio.windows import Window

from rsseg.checkpoint import ModelMeta
from rsseg.config import hex_rgb
from rsseg.data.constants import IGNORE_INDEX as CLASS_NODATA  # class rasters' nodata = the ignore value
from rsseg.errors import InputRasterError, RsSegError
from rsseg.inference.blend import ACC_DTYPE
from rsseg.inference.windows import column_strips
from rsseg.io import atomic_path

BLOCK = 512
#: confidence is max probability x 255 >= 255 / K >= 1, so 0 is free for nodata
CONFIDENCE_NODATA = 0


def select_bands(src: rasterio.DatasetReader, meta: ModelMeta, bands: list[int] | None) -> list[int]:
    """1-based band indexes to feed the model, in the model's band order."""
    need = meta.in_channels
    if bands is None:
        if src.count < need:
            raise RsSegError(f"{src.name} has {src.count} band(s) but the model needs {need} "
                             f"({', '.join(meta.bands)}); pass --bands with {need} band indexes")
        return list(range(1, need + 1))
    bands = [int(b) for b in bands]
    if len(bands) != need:
        raise RsSegError(f"--bands lists {len(bands)} band(s) but the model needs {need} ({', '.join(meta.bands)})")
    bad = [b for b in bands if not 1 <= b <= src.count]
    if bad:
        raise RsSegError(f"--bands {bad} out of range: {src.name} has bands 1..{src.count}")
    return bands


#: the input's pixel size may differ from the checkpoint's gsd by up to this factor without a warning
RESOLUTION_TOLERANCE = 2.0


def model_fit_problems(src: rasterio.DatasetReader, meta: ModelMeta, bands: list[int],
                       explicit_bands: bool = False) -> list[str]:
    """Ways the input does not look like the model's training data, one sentence each.

    - pixel size (metres, geodesic at the raster's centre, so geographic CRSs count too) more than
      :data:`RESOLUTION_TOLERANCE` times finer or coarser than the checkpoint's ``gsd``;
    - band descriptions of the selected ``bands`` (1-based) that name other bands than the model's;
    - an alpha band fed to the model;
    - more bands than the model reads, when the caller did not choose them (``explicit_bands``).
    Nothing is checked that the input does not state (no CRS: no pixel size; no descriptions).
    """
    from rsseg.inference.areas import AreaModel

    name = Path(src.name).name
    problems = []
    if meta.gsd and src.crs is not None:
        pixel = AreaModel(src.transform, src.crs, src.width, src.height).pixel_size_m()
        ratio = pixel / meta.gsd
        if not 1 / RESOLUTION_TOLERANCE <= ratio <= RESOLUTION_TOLERANCE:
            factor = max(ratio, 1 / ratio)
            times = f"{factor:,.0f}x" if factor >= 10 else f"{factor:.3g}x"
            problems.append(
                f"{name} has {pixel:.3g} m pixels but the model was trained on {meta.gsd:.3g} m pixels "
                f"({times} {'coarser' if ratio > 1 else 'finer'}), so its classes and areas are unreliable; "
                f"resample the input to about {meta.gsd:.3g} m (gdalwarp -tr) or use a model trained near {pixel:.3g} m")
    described = [(src.descriptions[b - 1] or "").strip() for b in bands]
    if all(described) and [d.lower() for d in described] != [b.lower() for b in meta.bands]:
        problems.append(f"{name} bands {', '.join(map(str, bands))} are described as {', '.join(described)} but the model "
                        f"reads them as {', '.join(meta.bands)}; pass --bands to pick them in that order")
    alpha = [b for b in bands if src.colorinterp[b - 1] == rasterio.enums.ColorInterp.alpha]
    if alpha:
        problems.append(f"band(s) {', '.join(map(str, alpha))} of {name} are alpha (transparency) bands but the model "
                        f"reads them as image bands ({', '.join(meta.bands)}); pass --bands to skip them")
    extra = [b for b in range(1, src.count + 1) if b not in bands
             and src.colorinterp[b - 1] != rasterio.enums.ColorInterp.alpha]
    if extra and not explicit_bands:
        problems.append(f"{name} has {src.count} bands; the model reads bands {', '.join(map(str, bands))} as "
                        f"{', '.join(meta.bands)} and ignores band(s) {', '.join(map(str, extra))}; "
                        "pass --bands if those are not the right ones")
    return problems


def check_model_fit(src: rasterio.DatasetReader, meta: ModelMeta, bands: list[int], explicit_bands: bool = False,
                    strict: bool = False) -> list[str]:
    """:func:`model_fit_problems` as ``UserWarning``s, or an :class:`InputRasterError` with ``strict``."""
    problems = model_fit_problems(src, meta, bands, explicit_bands)
    if strict and problems:
        raise InputRasterError("; ".join(problems) + " (refused because of --strict)")
    for problem in problems:
        warnings.warn(problem, UserWarning, stacklevel=3)
    return problems


def warn_if_not_georeferenced(src: rasterio.DatasetReader) -> None:
    if src.crs is None:
        warnings.warn(f"{src.name} has no CRS: outputs keep its pixel grid but are not georeferenced, "
                      "and areas assume map units are metres", UserWarning, stacklevel=3)


def _cache_bytes_per_column(src: rasterio.DatasetReader, tile: int) -> int:
    return (min(tile, src.height) + BLOCK) * src.count * np.dtype(src.dtypes[0]).itemsize


def strip_span(columns: Sequence[tuple[int, int]], tile: int, width: int) -> int:
    """Columns the windows of the widest strip of ``columns`` cover, at most: the strip plus up
    to a tile on each side (its halo), never more than the raster's ``width``."""
    return min(width, max(b - a for a, b in columns) + 2 * tile)


def block_cache(src: rasterio.DatasetReader, tile: int,
                columns: Sequence[tuple[int, int]] | None = None) -> rasterio.Env:
    """GDAL block cache sized to one window row of input blocks (tile + one block row high), as wide
    as the raster or, streaming in column strips ``columns``, as the widest strip's windows.

    GDAL's default cache is 5% of RAM (over 1 GB on most machines) and fills up as a large
    raster streams through, so peak memory would grow with raster height until that cap. One
    window row of blocks lets the horizontally overlapping windows of a row reuse decoded blocks;
    the uint8 output blocks pass through the same cache and are small next to it.
    """
    wide = src.width if columns is None else strip_span(columns, tile, src.width)
    nbytes = _cache_bytes_per_column(src, tile) * wide
    return rasterio.Env(GDAL_CACHEMAX=max(64 * 2**20, nbytes))


def stream_columns(src: rasterio.DatasetReader, tile: int, num_classes: int,
                   buffer_mb: float | None) -> list[tuple[int, int]]:
    """Column strips for ``src`` (:func:`~rsseg.inference.windows.column_strips`) whose
    width-dependent buffers fit ``buffer_mb`` MiB: the float16 blending ring (``K x tile`` per
    column) and the input block cache (:func:`block_cache`). ``None``: the whole width.

    A strip's ring spans its windows, up to a tile past each side, and no strip is narrower than
    two tiles (narrower ones would mostly recompute their neighbours' windows): a budget below
    that is exceeded, with a warning naming the smallest one that fits.
    """
    if buffer_mb is None:
        return [(0, src.width)]
    if buffer_mb <= 0:
        raise RsSegError(f"the buffer memory must be positive (got {buffer_mb} MB); use e.g. --buffer-mb 512")
    rows = min(tile, src.height)
    per_column = num_classes * rows * np.dtype(ACC_DTYPE).itemsize + _cache_bytes_per_column(src, tile)
    fit = int(buffer_mb * 2**20) // per_column
    if src.width <= fit:
        return [(0, src.width)]
    least = 2 * tile
    if fit - 2 * tile < least:
        warnings.warn(f"--buffer-mb {buffer_mb:g} is below the {per_column * 4 * tile / 2**20:.0f} MB that a strip of "
                      f"two {tile}-pixel tiles needs for {num_classes} classes; using that", UserWarning, stacklevel=2)
    return column_strips(src.width, max(fit - 2 * tile, least), BLOCK)


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

    Bands arrive top to bottom per column strip (a strip: the columns of a band's window; the
    whole width unless the raster streams in column strips, whose borders are multiples of
    :data:`BLOCK`, so no compressed tile is written twice).
    """

    def __init__(self, dst: rasterio.io.DatasetWriter) -> None:
        self.dst = dst
        #: per strip (first column, width): first raster row not yet written, rows buffered
        self.strips: dict[tuple[int, int], tuple[int, list[np.ndarray]]] = {}

    def write(self, window: Window, band: np.ndarray) -> None:
        key = (int(window.col_off), int(window.width))
        row, pending = self.strips.get(key, (0, []))
        if int(window.row_off) != row + sum(p.shape[0] for p in pending):
            raise ValueError(f"rows must arrive in order: got row {window.row_off} of columns {key}")
        pending.append(band)
        buffered = sum(p.shape[0] for p in pending)
        full = buffered if row + buffered == self.dst.height else (buffered // BLOCK) * BLOCK
        if full:
            data = np.concatenate(pending) if len(pending) > 1 else pending[0]
            self.dst.write(data[:full], 1, window=Window(key[0], row, key[1], full))
            pending = [data[full:]] if full < buffered else []
            row += full
        self.strips[key] = (row, pending)


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
