"""Rich progress bars for the ``on_progress(done, total)`` callbacks of the library."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextlib.contextmanager
def progress_bar(description: str, unit: str, *, transient: bool = False) -> Iterator[Callable[[int, int], None]]:
    """A rich bar on stderr; yields the ``on_progress(done, total)`` callback that drives it."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                  console=Console(file=sys.stderr), transient=transient) as bar:
        task = bar.add_task(description, total=None)

        def on_progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield on_progress
