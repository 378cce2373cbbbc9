"""Row-band accumulator for blending overlapping window predictions in bounded memory.

Only one row of windows is ever live: a ring buffer of ``window height`` rows x full width holds
the blended class probabilities. The blending weight of a window is the separable raised-cosine
ramp of :func:`rsseg.inference.windows.ramp` divided by the sum of the ramps of all windows that
cover the pixel. The plan is a grid (row starts x column starts), so that sum is separable too:
``cover_y(y) * cover_x(x)``. Normalising the weights up front means the ring holds probabilities
(the weighted sums already sum to 1) and no weight-sum plane is needed; values in [0, 1] keep
float16's absolute error below ~1e-3, which halves the buffer again. When the last window of a
row has been added, the rows no later window touches are complete and are handed to a callback
in chunks of at most :data:`BAND_ROWS` rows; their ring rows are then cleared for reuse.

Memory: ``K * tile * width * 2`` bytes (float16), plus O(width) weight vectors; nothing depends
on raster height. A blender may own a column strip only (``columns``): it takes the
windows that overlap the strip and its ring spans just their columns, so a raster of any width
streams in bounded memory strip by strip. Weights come from the whole plan, so each pixel of the
strip gets exactly the sums the whole-width blender gives it.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable

import numpy as np
from rasterio.windows import Window

from rsseg.inference.windows import Span, WindowPlan, ramp

#: callback(first_row, first_column, probs [K, n, w] float16 array); ``probs`` is a view of the
#: ring, valid only during the call
BandCallback = Callable[[int, int, np.ndarray], None]
#: rows per callback: bounds the callback's temporaries (masks, class ids) to BAND_ROWS x width
BAND_ROWS = 256
ACC_DTYPE = np.float16


def _cover(starts: list[int], length: int, overlap: int, lo: int, hi: int) -> np.ndarray:
    """Sum over windows at ``starts`` (each ``length`` long) of their ramps, on positions [lo, hi).

    Only the windows that intersect [lo, hi) are visited (``starts`` is sorted), so the cost per
    call is the handful of neighbours, not the raster size.
    """
    r = ramp(length, overlap)
    out = np.zeros(hi - lo, np.float32)
    for s in starts[bisect.bisect_right(starts, lo - length):bisect.bisect_left(starts, hi)]:
        a, b = max(s, lo), min(s + length, hi)
        out[a - lo:b - lo] += r[a - s:b - s]
    return out


class RowBlender:
    """Blend window probabilities [K, h, w] into finished bands of rows, in window order.

    ``plan`` is the whole-raster plan; with a column strip ``columns`` the blender takes only the
    windows overlapping it (:meth:`~rsseg.inference.windows.WindowPlan.windows_of`, row-major)
    and hands out those columns only.
    """

    def __init__(self, num_classes: int, plan: WindowPlan, on_band: BandCallback, columns: Span | None = None) -> None:
        windows = plan.windows
        self.width, self.height = plan.width, plan.height
        self.columns = Span(0, plan.width) if columns is None else columns
        mine = plan.windows_of(self.columns)
        self.rows = plan.row_starts
        self.cols = sorted({int(w.col_off) for w in windows})
        self._left = Counter(int(w.row_off) for w in mine)
        self.ring, self.tile_w = int(windows[0].height), int(windows[0].width)
        self.lo = min(int(w.col_off) for w in mine)
        hi = max(int(w.col_off) + self.tile_w for w in mine)
        self.overlap = overlap = plan.overlap
        ry, rx = ramp(self.ring, overlap), ramp(self.tile_w, overlap)
        cover_x = _cover(self.cols, self.tile_w, overlap, self.lo, hi)
        # per column start: the window's column weights already divided by the column coverage
        self._wx = {x0: rx / cover_x[x0 - self.lo:x0 - self.lo + self.tile_w] for x0 in {int(w.col_off) for w in mine}}
        self._ry = ry
        self._wy: np.ndarray | None = None  # row weights of the open row of windows
        self.acc = np.zeros((num_classes, self.ring, hi - self.lo), dtype=ACC_DTYPE)
        self.on_band = on_band
        self._row = 0  # index into self.rows of the row of windows being filled
        self.done_rows = 0  # raster rows already handed to on_band

    def _pieces(self, y0: int, y1: int) -> list[tuple[int, int, int]]:
        """Split raster rows [y0, y1) (at most ``ring`` rows) into (ring_start, ring_end, offset)."""
        start = y0 % self.ring
        first = min(y1 - y0, self.ring - start)
        out = [(start, start + first, 0)]
        if first < y1 - y0:
            out.append((0, y1 - y0 - first, first))
        return out

    def add(self, window: Window, probs: np.ndarray) -> None:
        """Accumulate one window's probabilities [K, h, w] (windows must arrive row-major)."""
        y0, x0 = int(window.row_off), int(window.col_off)
        if y0 != self.rows[self._row]:
            raise ValueError(f"window at row {y0} arrived while row {self.rows[self._row]} is open")
        if x0 not in self._wx:
            raise ValueError(f"window at column {x0} does not overlap this blender's columns "
                             f"[{self.columns.start}, {self.columns.stop})")
        h, w = probs.shape[-2:]
        if self._wy is None:  # first window of this row: row weights are shared by the whole row
            self._wy = self._ry / _cover(self.rows, self.ring, self.overlap, y0, y0 + self.ring)
        wgt = np.outer(self._wy[:h], self._wx[x0][:w])  # float32, as the ramps and coverages are
        x = x0 - self.lo
        for rs, re, off in self._pieces(y0, y0 + h):
            seg = self.acc[:, rs:re, x:x + w]
            # the product in float32, one rounding on the float16 add (numpy's float16 ufuncs
            # would convert per element twice)
            np.add(seg, probs[:, off:off + re - rs] * wgt[off:off + re - rs], out=seg, casting="unsafe")
        self._left[y0] -= 1
        if self._left[y0] == 0:
            self._row += 1
            self._wy = None
            end = self.rows[self._row] if self._row < len(self.rows) else self.height
            self._finish(y0, end)

    def _finish(self, y0: int, y1: int) -> None:
        for rs, re, off in self._pieces(y0, y1):
            for r0 in range(rs, re, BAND_ROWS):
                r1 = min(r0 + BAND_ROWS, re)
                a, b = self.columns.start - self.lo, self.columns.stop - self.lo
                self.on_band(y0 + off + r0 - rs, self.columns.start, self.acc[:, r0:r1, a:b])
            self.acc[:, rs:re] = 0
        self.done_rows = y1

    @property
    def complete(self) -> bool:
        return self.done_rows == self.height


def argmax_confidence(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class ids [n, W] uint8 and max probability [n, W] (``probs``' dtype) from probabilities [K, n, W] >= 0.

    Loops over classes instead of ``argmax`` so no int64 [n, W] array is ever allocated; ties go
    to the lower class id, as with ``argmax``. Non-negative float16 values order as their bit
    patterns do, so float16 bands are compared as uint16 (numpy has no vectorised float16 compare).
    """
    keys = probs.view(np.uint16) if probs.dtype == np.float16 else probs
    best = keys[0].copy()
    cls = np.zeros(best.shape, dtype=np.uint8)
    for k in range(1, probs.shape[0]):
        cls[keys[k] > best] = k
        np.maximum(best, keys[k], out=best)
    return cls, best.view(probs.dtype)


def confidence_u8(conf: np.ndarray) -> np.ndarray:
    """Max probability [n, W] -> uint8 ``round(p * 255)`` clamped to [1, 255] (0 stays free for nodata)."""
    return np.clip(np.rint(conf.astype(np.float32) * 255), 1, 255).astype(np.uint8)
