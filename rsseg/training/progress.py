"""What training shows while it runs: on a terminal Lightning's rich bar, in a log (a file, a
pipe: CI, ``nohup``) plain lines, one per epoch and one at least every minute within a long one.
Both count epochs 1..N ("epoch 3/20") and leave out ``v_num``, the logger's version number."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.callbacks.progress import ProgressBar

from rsseg.progress import PlainProgress, clock_text, on_terminal, write_line


def epoch_text(current_epoch: int, max_epochs: int | None) -> str:
    """Lightning's 0-based ``current_epoch`` as a user counts it: ``epoch 3/20`` (``epoch 3`` without an end)."""
    return f"epoch {current_epoch + 1}/{max_epochs}" if max_epochs and max_epochs > 0 else f"epoch {current_epoch + 1}"


def shown_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics a progress display shows: those the task logs with ``prog_bar=True``, without
    the ``v_num`` Lightning adds (a logger's version number, meaningless to a user)."""
    return {k: v for k, v in metrics.items() if k != "v_num"}


class EpochBar(RichProgressBar):
    """Lightning's rich bar with epochs counted 1..N and no ``v_num``."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        return shown_metrics(super().get_metrics(trainer, pl_module))

    def _get_train_description(self, current_epoch: int) -> str:
        # Lightning's text counts from 0 ("Epoch 0/0" for a one-epoch run); this private method is
        # the one place RichProgressBar builds it (lightning 2.6); the padding keeps the bar from
        # jumping between the epoch and validation descriptions, as Lightning's does
        text = epoch_text(current_epoch, self.trainer.max_epochs)
        return f"{text:{len(self.validation_description)}}"


def _number(value: Any) -> str:
    value = value.item() if hasattr(value, "item") else value
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class EpochLog(ProgressBar):
    """Training progress as plain lines for a log: one line per epoch (its time, the metrics the
    bar would show, the ETA of the run) and, within an epoch, a step line at least every
    ``every_s`` seconds, each flushed (:func:`rsseg.progress.write_line`), to ``stream``: default standard
    output, where Lightning's bar draws (errors stay alone on stderr)."""

    def __init__(self, stream: TextIO | None = None, every_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.stream, self.every_s, self.clock = stream, every_s, clock
        self.enabled = True
        self.started = 0.0
        self.first_epoch = 0
        self.epoch_started = 0.0
        self.steps: PlainProgress | None = None

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        return shown_metrics(super().get_metrics(trainer, pl_module))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started, self.first_epoch = self.clock(), trainer.current_epoch  # a resumed run starts later

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_started = self.clock()
        self.steps = PlainProgress(epoch_text(trainer.current_epoch, trainer.max_epochs), "steps", step=None,
                                   every_s=self.every_s, first=False, last=False, stream=self._out(), clock=self.clock)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.enabled and self.steps is not None:
            total = self.total_train_batches
            self.steps(batch_idx + 1, int(total) if math.isfinite(total) else 0)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled:
            return
        now = self.clock()
        epoch, last = trainer.current_epoch, trainer.max_epochs
        parts = [f"{epoch_text(epoch, last)} done in {clock_text(now - self.epoch_started)}"]
        parts += [f"{name} {_number(value)}" for name, value in self.get_metrics(trainer, pl_module).items()]
        remaining = last - (epoch + 1) if last and last > 0 else 0
        if remaining > 0:
            per_epoch = (now - self.started) / (epoch + 1 - self.first_epoch)
            parts.append(f"ETA {clock_text(per_epoch * remaining)}")
        write_line(", ".join(parts), self._out())

    def _out(self) -> TextIO:
        return self.stream or sys.stdout  # looked up when used: a test runner swaps it


def training_progress(terminal: bool | None = None) -> ProgressBar:
    """The progress display of a training run: :class:`EpochBar` when standard output (where
    Lightning's rich console draws) is a terminal (``terminal``, default: asked), else :class:`EpochLog`
    lines there."""
    if terminal is None:
        terminal = on_terminal(sys.stdout)
    return EpochBar() if terminal else EpochLog()
