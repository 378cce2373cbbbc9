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

import numpy as np
from rasterio.windows import Window

from rsseg.errors import RsSegError

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
    """Raise :class:`RsSegError` for a tile/overlap pair that cannot tile a raster."""
    if tile < 1:
        raise RsSegError(f"tile must be positive (got {tile}); use e.g. --tile 1024")
    if not 0 <= overlap < tile:
        raise RsSegError(f"overlap must be in [0, tile) (got overlap={overlap}, tile={tile}); use e.g. --overlap {tile // 4}")


def plan_windows(width: int, height: int, tile: int, overlap: int) -> list[Window]:
    """Windows covering a ``width`` x ``height`` raster, row-major (all windows of one row first).

    Every window has the same shape ``min(tile, height)`` x ``min(tile, width)``; consecutive
    windows overlap by at least ``overlap`` pixels (more for the pulled-in last row/column).
    """
    check_tiling(tile, overlap)
    if width < 1 or height < 1:
        raise RsSegError(f"cannot tile an empty raster ({width}x{height} pixels)")
    w, h = min(tile, width), min(tile, height)
    return [Window(x, y, w, h) for y in _starts(height, tile, overlap) for x in _starts(width, tile, overlap)]


def strip_plan(height: int, tile: int, overlap: int, window_rows: int) -> list[tuple[int, int]]:
    """Row strips ``[a, b)`` covering a raster of ``height`` rows, for distributed prediction.

    Each strip starts where a row of windows of :func:`plan_windows` starts and spans
    ``window_rows`` rows of windows (the last one ends at ``height``), so strips follow the grid
    of the whole-raster plan and never split the rows one row of windows finishes.
    """
    check_tiling(tile, overlap)
    if window_rows < 1:
        raise RsSegError(f"a strip needs at least one row of windows (got {window_rows})")
    bounds = _starts(height, tile, overlap)[::window_rows] + [height]
    return list(zip(bounds[:-1], bounds[1:]))


def strip_halo(a: int, b: int, height: int, tile: int, overlap: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of the windows that blend into the strip ``[a, b)`` of :func:`strip_plan`.

    Those are the windows of the whole-raster plan that touch the strip: the strip's own rows of
    windows plus the earlier ones reaching into it (the blending halo). Planned on its own, the
    sub-raster ``[lo, hi)`` has exactly these windows (shifted by ``lo``), so blending them gives
    the strip's rows the same weights as the whole-raster run.
    """
    starts = _starts(height, tile, overlap)
    h = min(tile, height)
    touching = [s for s in starts if s < b and s + h > a]
    if not touching or a not in starts:
        raise ValueError(f"rows [{a}, {b}) are not a strip of the window grid (row starts {starts[:4]}...)")
    return touching[0], touching[-1] + h


def column_strips(width: int, max_width: int, align: int) -> list[tuple[int, int]]:
    """Column strips ``[a, b)`` covering ``width`` columns, each at most ``max_width`` wide.

    Strips are as even as possible and start at multiples of ``align`` (the output's block width,
    so no output block is written by two strips); ``max_width`` below ``align`` counts as
    ``align``. One strip ``[(0, width)]`` when the raster fits.
    """
    if width <= max_width:
        return [(0, width)]
    n = -(-width // max(max_width // align * align, align))
    step = -(-(-(-width // n)) // align) * align  # ceil(width / n), rounded up to ``align``
    return [(a, min(a + step, width)) for a in range(0, width, step)]


def touching(windows: list[Window], a: int, b: int) -> list[Window]:
    """The windows that overlap columns ``[a, b)``, in plan order."""
    return [w for w in windows if w.col_off < b and w.col_off + w.width > a]


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
