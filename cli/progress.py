"""Progress of the ``on_progress(done, total)`` callbacks of the library: a rich bar on a
terminal, plain lines in a log (:class:`rsseg.progress.PlainProgress`)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from rsseg.progress import PlainProgress, ProgressFn, on_terminal


@contextlib.contextmanager
def progress_bar(description: str, unit: str, *, transient: bool = False) -> Iterator[ProgressFn]:
    """Yield an ``on_progress(done, total)`` callback that drives a rich bar on stderr, or, when
    stderr is not a terminal (a file, a pipe: CI, ``nohup``), writes a plain line every 10 % and
    at least every minute with done/total, rate and ETA (a bar there would show nothing until it ends).

    The bar appears at the first call, so work before it (training, loading) keeps the terminal.
    ``total`` 0 means unknown (a bar without an end).
    """
    if not on_terminal(sys.stderr):
        yield PlainProgress(description, unit)
        return
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                   console=Console(file=sys.stderr), transient=transient)
    task: TaskID | None = None

    def on_progress(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task(description, total=total or None)
        bar.update(task, completed=done, total=total or None)

    try:
        yield on_progress
    finally:
        if task is not None:
            bar.stop()
