"""The one progress-callback type of the library, and its plain-text rendering for logs (a leaf
module: no imports beyond the standard library).

Long-running library calls take ``on_progress: ProgressFn | None``: called from the calling thread
as ``on_progress(done, total)``, the last call with ``done == total``; ``None`` is silent. The
library prints nothing itself: the CLI renders the calls with rich on a terminal
(``cli/progress.py``) and as :class:`PlainProgress` lines elsewhere (a file, a pipe: CI,
``nohup``), training the same way (``rsseg/training/progress.py``), the viewer with ``st.progress``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

ProgressFn = Callable[[int, int], None]

__all__ = ["PlainProgress", "ProgressFn", "clock_text", "on_terminal", "progress_line", "write_line"]


def on_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal, where a live bar redraws itself. A bar sent to
    a file or a pipe shows nothing until it stops, so those get :class:`PlainProgress` lines."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def clock_text(seconds: float) -> str:
    """``75`` -> ``'1:15'``, ``3725`` -> ``'1:02:05'``."""
    hours, rest = divmod(round(max(seconds, 0.0)), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_line(label: str, done: int, total: int, unit: str, elapsed: float, rate: float | None = None) -> str:
    """One line of progress, e.g. ``'tanzania: 120/480 windows (25%), 3.2 windows/s, 0:37 elapsed, ETA 1:52'``.

    ``total`` 0 means unknown (no percent, no ETA); ``rate``: units per second (``None``: not known
    yet); the last line (``done == total``) says how long it took instead.
    """
    head = f"{label}: {done:,}/{total:,} {unit} ({100 * done / total:.0f}%)" if total > 0 else f"{label}: {done:,} {unit}"
    parts = [head]
    if rate:
        parts.append(f"{rate:.3g} {unit}/s")
    if total > 0 and done >= total:
        parts.append(f"done in {clock_text(elapsed)}")
        return ", ".join(parts)
    parts.append(f"{clock_text(elapsed)} elapsed")
    if total > 0 and rate:
        parts.append(f"ETA {clock_text((total - done) / rate)}")
    return ", ".join(parts)


def write_line(line: str, stream: TextIO | None = None) -> None:
    """``line`` to ``stream`` (default ``sys.stderr`` at the time of the call), flushed at once so a
    log shows it as it happens; standard output is flushed first, so a log that takes both streams
    keeps them in order."""
    sys.stdout.flush()
    stream = stream or sys.stderr
    stream.write(line + "\n")
    stream.flush()


class PlainProgress:
    """An ``on_progress(done, total)`` that writes :func:`progress_line` lines (:func:`write_line`).

    A line at the first call (``first``), each time another ``step`` of the total is done (0.1:
    every 10 %; ``None``: never), at least every ``every_s`` seconds while work goes on, and at the
    last call (``done == total``, ``last``). Time and rate count from the first call: work before
    it (loading a model, training before the demo predicts) is not the work being counted.
    """

    def __init__(self, label: str, unit: str, *, step: float | None = 0.1, every_s: float = 60.0,
                 first: bool = True, last: bool = True, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.unit, self.step, self.every_s = label, unit, step, every_s
        self.first, self.last, self.stream, self.clock = first, last, stream, clock
        self.start: tuple[float, int] | None = None  # (time, done) at the first call
        self.written_at = 0.0
        self.mark = 0  # steps of the total already reported

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        final = total > 0 and done >= total
        if self.start is None:
            self.start = (now, done)
            self.written_at = now
            if self.first or (final and self.last):
                self._write(done, total, now)
            return
        if final:
            if self.last:
                self._write(done, total, now)
            return
        if self._mark(done, total) > self.mark or now - self.written_at >= self.every_s:
            self._write(done, total, now)

    def _mark(self, done: int, total: int) -> int:
        """How many ``step``s of the total ``done`` is (in integers: 0.3 / 0.1 is 2.9999 in floats)."""
        return done * round(1 / self.step) // total if self.step and total > 0 else 0

    def _write(self, done: int, total: int, now: float) -> None:
        started, done0 = self.start
        elapsed = now - started
        rate = (done - done0) / elapsed if elapsed > 0 and done > done0 else None
        self.mark, self.written_at = self._mark(done, total), now
        write_line(progress_line(self.label, done, total, self.unit, elapsed, rate), self.stream)
