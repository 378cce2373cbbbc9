"""Sliding-window plan, blending weights and border padding.

The window plan covers the whole raster: windows step by ``tile - overlap`` and the last row and
column are pulled back inside the raster, so every window lies fully inside it and no window
ever sees synthetic pixels (except rasters smaller than one tile, which are reflect-padded).
Overlapping predictions are blended with a separable raised-cosine ramp, the usual remedy for
tile seams in sliding-window segmentation (e.g. the sliding-window testing of UNetFormer,
Wang et al. 2022); the ramp never reaches 0 so a pixel covered by a
single window keeps a valid (normalised) prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from rasterio.windows import Window

from rsseg.errors import ConfigError, InputRasterError

#: UNet-style encoders downsample 5 times; inputs must be a multiple of this
MULTIPLE = 32
#: smallest blend weight, so a pixel seen by one window only never divides by ~0
MIN_WEIGHT = 1e-3


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, tile - overlap))
    starts.append(size - tile)  # pull the last window inside so the far edge is covered
    return starts


def check_tiling(tile: int, overlap: int) -> None:
    """Raise :class:`~rsseg.errors.ConfigError` for a tile/overlap pair that cannot tile a raster."""
    if tile < 1:
        raise ConfigError(f"tile must be positive (got {tile}); use e.g. --tile 1024")
    if not 0 <= overlap < tile:
        raise ConfigError(f"overlap must be in [0, tile) (got overlap={overlap}, tile={tile}); use e.g. --overlap {tile // 4}")


@dataclass(frozen=True)
class Span:
    """Rows or columns ``[start, stop)`` of a raster (one axis of a rasterio ``Window``)."""

    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class WindowPlan:
    """The whole-raster window plan of a ``width`` x ``height`` raster and the strips cut from it.

    Two kinds of strip, named apart everywhere: a **row strip** (:meth:`row_strips`) is the unit of
    work of a distributed run, predicted with its **halo** (:meth:`halo`); a **column strip**
    (:func:`column_strips`) bounds the width of the blending ring and block cache under the memory
    budget. Both are :class:`Span` s; :meth:`windows_of` lists a column strip's windows.
    """

    width: int
    height: int
    tile: int
    overlap: int

    def __post_init__(self) -> None:
        check_tiling(self.tile, self.overlap)
        if self.width < 1 or self.height < 1:
            raise InputRasterError(f"cannot tile an empty raster ({self.width}x{self.height} pixels)")

    @cached_property
    def windows(self) -> list[Window]:
        """Every window, row-major (all windows of one row first), each ``min(tile, height)`` x
        ``min(tile, width)``; consecutive windows overlap by at least ``overlap`` pixels (more for
        the pulled-in last row/column)."""
        w, h = min(self.tile, self.width), min(self.tile, self.height)
        cols = _starts(self.width, self.tile, self.overlap)
        return [Window(x, y, w, h) for y in self.row_starts for x in cols]

    @cached_property
    def row_starts(self) -> list[int]:
        """First raster row of each row of windows."""
        return _starts(self.height, self.tile, self.overlap)

    def windows_of(self, columns: Span) -> list[Window]:
        """The windows that overlap the column strip ``columns``, in plan order."""
        return [w for w in self.windows if w.col_off < columns.stop and w.col_off + w.width > columns.start]

    def row_strips(self, window_rows: int) -> list[Span]:
        """Row strips covering the raster, for distributed prediction.

        Each strip starts where a row of windows starts and spans ``window_rows`` rows of windows
        (the last one ends at ``height``), so strips follow the grid of the whole-raster plan and
        never split the rows one row of windows finishes.
        """
        if window_rows < 1:
            raise ConfigError(f"a strip needs at least one row of windows (got {window_rows})")
        bounds = self.row_starts[::window_rows] + [self.height]
        return [Span(a, b) for a, b in zip(bounds[:-1], bounds[1:])]

    def halo(self, strip: Span) -> Span:
        """Rows of the windows that blend into the row strip ``strip`` of :meth:`row_strips`.

        Those are the windows of the whole-raster plan that touch the strip: the strip's own rows
        of windows plus the earlier ones reaching into it (the blending halo). Planned on its own,
        the sub-raster of these rows has exactly these windows (shifted by its start), so blending
        them gives the strip's rows the same weights as the whole-raster run.
        """
        starts = self.row_starts
        h = min(self.tile, self.height)
        touching = [s for s in starts if s < strip.stop and s + h > strip.start]
        if not touching or strip.start not in starts:
            raise ValueError(f"rows [{strip.start}, {strip.stop}) are not a strip of the window grid "
                             f"(row starts {starts[:4]}...)")
        return Span(touching[0], touching[-1] + h)


def plan_windows(width: int, height: int, tile: int, overlap: int) -> list[Window]:
    """The windows of :class:`WindowPlan` ``(width, height, tile, overlap)``."""
    return WindowPlan(width, height, tile, overlap).windows


def column_strips(width: int, max_width: int, align: int) -> list[Span]:
    """Column strips covering ``width`` columns, each at most ``max_width`` wide.

    Strips are as even as possible and start at multiples of ``align`` (the output's block width,
    so no output block is written by two strips); ``max_width`` below ``align`` counts as
    ``align``. One strip, the whole width, when the raster fits.
    """
    if width <= max_width:
        return [Span(0, width)]
    n = -(-width // max(max_width // align * align, align))
    step = -(-(-(-width // n)) // align) * align  # ceil(width / n), rounded up to ``align``
    return [Span(a, min(a + step, width)) for a in range(0, width, step)]


def ramp(length: int, overlap: int) -> np.ndarray:
    """1-D raised-cosine weight [length]: rises over ``overlap`` pixels at both ends, 1 inside."""
    if overlap <= 0:
        return np.ones(length, np.float32)
    d = np.minimum(np.arange(length), np.arange(length)[::-1]) + 0.5  # distance to the nearest edge
    w = np.where(d < overlap, 0.5 - 0.5 * np.cos(np.pi * d / overlap), 1.0)
    return np.maximum(w, MIN_WEIGHT).astype(np.float32)


def blend_weight(height: int, width: int, overlap: int) -> np.ndarray:
    """Separable 2-D blending weight [height, width], in (0, 1]."""
    return ramp(height, overlap)[:, None] * ramp(width, overlap)[None, :]


def padded_size(size: int) -> int:
    """``size`` rounded up to a multiple of :data:`MULTIPLE`."""
    return -(-size // MULTIPLE) * MULTIPLE


def reflect_pad(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad [C, h, w] at the bottom/right to [C, height, width] by mirroring, never with zeros.

    A 1-pixel-wide axis cannot be mirrored; it is repeated instead.
    """
    ph, pw = height - image.shape[-2], width - image.shape[-1]
    if ph == 0 and pw == 0:
        return image
    pads = ((0, 0), (0, ph), (0, pw))
    if min(image.shape[-2:]) > 1:
        return np.pad(image, pads, mode="reflect")
    return np.pad(image, pads, mode="edge")
