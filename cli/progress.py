"""Rich progress bars for the ``on_progress(done, total)`` callbacks of the library."""

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

from rsseg.progress import ProgressFn


@contextlib.contextmanager
def progress_bar(description: str, unit: str, *, transient: bool = False) -> Iterator[ProgressFn]:
    """Yield an ``on_progress(done, total)`` callback that drives a rich bar on stderr.

    The bar appears at the first call, so work before it (training, loading) keeps the terminal.
    """
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                   console=Console(file=sys.stderr), transient=transient)
    task: TaskID | None = None

    def on_progress(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task(description, total=total)
        bar.update(task, completed=done, total=total)

    try:
        yield on_progress
    finally:
        if task is not None:
            bar.stop()
