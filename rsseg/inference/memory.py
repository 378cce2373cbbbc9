"""The memory budget of a streaming run: column strips whose width-dependent buffers (the
blending ring, the input block cache) fit ``--buffer-mb``, and the GDAL block cache they read through."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import rasterio

from rsseg.errors import ConfigError, MemoryBudgetWarning
from rsseg.inference.blend import ACC_DTYPE
from rsseg.inference.cog import BLOCK
from rsseg.inference.windows import Span, column_strips


def _cache_bytes_per_column(src: rasterio.DatasetReader, tile: int) -> int:
    return (min(tile, src.height) + BLOCK) * src.count * np.dtype(src.dtypes[0]).itemsize


def strip_span(columns: Sequence[Span], tile: int, width: int) -> int:
    """Columns the windows of the widest column strip of ``columns`` cover, at most: the strip
    plus up to a tile on each side, never more than the raster's ``width``."""
    return min(width, max(c.size for c in columns) + 2 * tile)


def block_cache(src: rasterio.DatasetReader, tile: int,
                columns: Sequence[Span] | None = None) -> rasterio.Env:
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
                   buffer_mb: float | None) -> list[Span]:
    """Column strips for ``src`` (:func:`~rsseg.inference.windows.column_strips`) whose
    width-dependent buffers fit ``buffer_mb`` MiB: the float16 blending ring (``K x tile`` per
    column) and the input block cache (:func:`block_cache`). ``None``: the whole width.

    A strip's ring spans its windows, up to a tile past each side, and no strip is narrower than
    two tiles (narrower ones would mostly recompute their neighbours' windows): a budget below
    that is exceeded, with a warning naming the smallest one that fits.
    """
    if buffer_mb is None:
        return [Span(0, src.width)]
    if buffer_mb <= 0:
        raise ConfigError(f"the buffer memory must be positive (got {buffer_mb} MB); use e.g. --buffer-mb 512")
    rows = min(tile, src.height)
    per_column = num_classes * rows * np.dtype(ACC_DTYPE).itemsize + _cache_bytes_per_column(src, tile)
    fit = int(buffer_mb * 2**20) // per_column
    if src.width <= fit:
        return [Span(0, src.width)]
    least = 2 * tile
    if fit - 2 * tile < least:
        warnings.warn(f"--buffer-mb {buffer_mb:g} is below the {per_column * 4 * tile / 2**20:.0f} MB that a strip of "
                      f"two {tile}-pixel tiles needs for {num_classes} classes; using that", MemoryBudgetWarning, stacklevel=2)
    return column_strips(src.width, max(fit - 2 * tile, least), BLOCK)
