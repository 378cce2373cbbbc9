"""Sliding-window predictor: batching and the threaded pipeline around an inference engine.

One :class:`Predictor` serves every caller: ``predict_file`` streams a raster from disk,
``predict_probs`` / ``predict_array`` tile an in-memory image (Streamlit app, ``rsseg evaluate``)
through the same plan, batching and blending (:mod:`rsseg.inference.blend`).

Pipeline (``Predictor.run``): a reader thread reads and normalises windows into batches, the
calling thread runs the model, a blender thread accumulates probabilities into bands of rows and
hands finished bands to a callback (which writes them). Bounded queues keep at most a couple of
batches in flight, so memory stays flat and reading/blending/writing overlap model compute.
The model and test-time augmentation run in an engine (:mod:`rsseg.inference.engines`: PyTorch
or ONNX Runtime), chosen by :meth:`Predictor.from_checkpoint`.
"""

from __future__ import annotations

import queue
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rasterio.windows import Window

from rsseg.checkpoint import ModelMeta, is_onnx_model
from rsseg.data.normalize import Normalizer
from rsseg.errors import CheckpointError, FallbackWarning, InputRasterError, MissingExtraError, RsSegError
from rsseg.inference.blend import BandCallback, RowBlender, argmax_confidence
from rsseg.inference.engines import FILE_ENGINES, Engine, NumpyEngine, TorchEngine, cached_onnx
from rsseg.inference.settings import (
    PredictSettings,
    check_settings,
    fastest_file_engine,
    resolve_device,
    resolve_engine,
)
from rsseg.inference.windows import Span, WindowPlan, padded_size, reflect_pad
from rsseg.progress import ProgressFn

if TYPE_CHECKING:  # the ONNX path never imports torch (a CUDA build costs ~700 MB of RSS)
    from torch import nn

_POLL_S = 0.1


def _put(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, stop: threading.Event) -> object:
    while not stop.is_set():
        try:
            return q.get(timeout=_POLL_S)
        except queue.Empty:
            continue
    return None


@dataclass
class _Run:
    """What the three threads of one :meth:`Predictor.run` share."""

    batches: queue.Queue
    results: queue.Queue
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)

    def fail(self, exc: BaseException) -> None:
        self.errors.append(exc)
        self.stop.set()


#: end of a queue's items
_DONE = object()


def onnx_export_cached(checkpoint: str | Path, settings: PredictSettings) -> Path | None:
    """The ONNX file that :meth:`Predictor.from_checkpoint` would run ``checkpoint`` from in ONNX
    Runtime or OpenVINO, if there is one: an exported ``.onnx`` model itself, or a checkpoint's cached export
    (:func:`rsseg.inference.engines.onnx_cache_paths`). :meth:`Predictor.from_onnx` then loads it in a
    second, builds no PyTorch model and never imports torch."""
    from rsseg.inference.engines import onnx_cache_paths

    if is_onnx_model(checkpoint):
        return Path(checkpoint) if Path(checkpoint).is_file() else None
    try:
        if resolve_engine(settings.engine, resolve_device(settings.device)) not in FILE_ENGINES:
            return None
        return next((p for p in onnx_cache_paths(checkpoint) if p.is_file()), None)
    except (OSError, RsSegError, ModuleNotFoundError):  # a missing checkpoint, bad device or no torch: the usual path reports it
        return None


class Predictor:
    """An inference engine plus its resolved :class:`~rsseg.inference.settings.PredictSettings`
    (``settings``: tile, overlap, batch, TTA, device, engine); see the module docstring.

    ``engine`` (:mod:`rsseg.inference.engines`) maps a normalised [B, C, H, W] float32 batch (H, W
    multiples of 32) to probabilities [B, K, H, W], TTA included. Build one with
    :meth:`from_checkpoint` (engine chosen there), :meth:`from_model` (a loaded PyTorch model) or
    :meth:`from_onnx` (an export file): they resolve unset settings in one place
    (:func:`rsseg.inference.settings.resolve_settings`).
    """

    def __init__(self, engine: Engine, meta: ModelMeta, settings: PredictSettings) -> None:
        if not settings.resolved:
            raise ValueError(f"a Predictor needs resolved settings (resolve_settings), got {settings}")
        check_settings(settings)
        if not (len(meta.mean) == len(meta.std) == meta.in_channels):
            raise CheckpointError(f"checkpoint metadata is inconsistent: {meta.in_channels} bands but "
                                  f"{len(meta.mean)} means and {len(meta.std)} stds")
        self.meta, self.settings, self.engine = meta, settings, engine
        self._normalise = Normalizer(meta.mean, meta.std, meta.scale)
        #: raw value of each band that normalises to 0 (the training mean): what invalid pixels become
        self._fill = (np.asarray(meta.mean, np.float32) * np.float32(meta.scale))[:, None]

    @classmethod
    def from_model(cls, model: nn.Module, meta: ModelMeta, settings: PredictSettings | None = None,
                   **overrides: Any) -> Predictor:
        """A predictor for a loaded model (torch engine): checkpoint config -> CPU/GPU rule -> ``settings``,
        then ``overrides`` (fields of :class:`PredictSettings`: ``device``, ``tile``, ``overlap``, ...)."""
        s = replace(settings or PredictSettings(), **overrides, engine="torch").resolve(meta)
        return cls(TorchEngine(model, s.device), meta, s)

    @classmethod
    def from_checkpoint(cls, path: str | Path, settings: PredictSettings | None = None, *,
                        on_export: Callable[[Path], None] | None = None, **overrides: Any) -> Predictor:
        """Build the predictor for checkpoint ``path`` with ``settings`` then ``overrides`` (fields of
        :class:`PredictSettings`), resolved for the checkpoint, on the resolved device and engine.

        ``engine`` (:func:`rsseg.inference.settings.resolve_engine`): ``torch`` loads the weights
        (:func:`rsseg.checkpoint.load_model`); ``onnx`` and ``openvino`` run the model exported once
        and cached (:func:`rsseg.inference.engines.cached_onnx`) in ONNX Runtime or OpenVINO, reading
        the metadata from the ONNX file; ``auto`` picks the fastest installed of them on the CPU and
        falls back to ``torch`` (with a warning) if the export fails; ``on_export(onnx_path)`` is
        called before a first, slow export.
        An exported ``.onnx`` model runs in a CPU engine (:meth:`from_onnx`).
        """
        from rsseg.checkpoint import load_model

        if is_onnx_model(path):  # the model file is its own metadata: no checkpoint, no export
            return cls.from_onnx(path, settings, **overrides)
        requested = replace(settings or PredictSettings(), **overrides)
        dev = resolve_device(requested.device)
        engine = resolve_engine(requested.engine, dev)
        if engine in FILE_ENGINES:
            try:
                runner = FILE_ENGINES[engine](cached_onnx(path, on_export=on_export))
            except Exception as exc:
                if requested.engine != "auto" or isinstance(exc, (FileNotFoundError, CheckpointError, MissingExtraError)):
                    raise
                warnings.warn(f"ONNX export of {path} failed ({exc}); running it with PyTorch", FallbackWarning, stacklevel=2)
            else:
                return cls._from_onnx_engine(runner, replace(requested, device=dev))
        model, meta = load_model(path, dev)
        return cls.from_model(model, meta, replace(requested, device=dev))

    @classmethod
    def from_onnx(cls, path: str | Path, settings: PredictSettings | None = None, **overrides: Any) -> Predictor:
        """A predictor for an rsseg ONNX export (``rsseg export``, or :func:`onnx_export_cached`'s) on
        the CPU, with the metadata stored in the file; ``settings`` and ``overrides`` as
        :meth:`from_checkpoint` takes them. The engine is the one they name if it runs ONNX files
        (``onnx``, ``openvino``), else the fastest installed (the file holds no PyTorch weights; a
        user's request for torch is refused before, by :func:`rsseg.inference.settings.onnx_model_settings`)."""
        requested = replace(settings or PredictSettings(), **overrides)
        engine = requested.engine if requested.engine in FILE_ENGINES else (fastest_file_engine() or "onnx")
        # the file engines run on the CPU whatever the caller asked for (the CLI refuses cuda before)
        return cls._from_onnx_engine(FILE_ENGINES[engine](path), replace(requested, device="cpu"))

    @classmethod
    def _from_onnx_engine(cls, runner: NumpyEngine, requested: PredictSettings) -> Predictor:
        return cls(runner, runner.meta, replace(requested, engine=runner.name).resolve(runner.meta))

    @property
    def num_classes(self) -> int:
        return self.meta.num_classes

    def normalise(self, raw: np.ndarray) -> np.ndarray:
        """Raw pixels [C, h, w] -> float32 ``(raw / scale - mean) / std`` (the checkpoint's recipe,
        through the one normaliser training uses too)."""
        return self._normalise(raw)

    def prepare(self, raw: np.ndarray, invalid: np.ndarray | None = None, mapping: Callable | None = None) -> np.ndarray:
        """Raw pixels [C, h, w] -> the model's input: ``mapping`` (the user's rescale,
        :class:`rsseg.inference.contract.InputMapping`) applied, ``invalid`` pixels [h, w]
        (nodata, NaN) filled with the training mean, then :meth:`normalise`. Filling before
        normalising keeps NaN out of the model: one NaN pixel would spread over its whole window."""
        x = mapping(raw) if mapping is not None else raw
        if invalid is not None:
            x = x.astype(np.float32)  # a copy: the caller's array stays as read
            x[:, invalid] = self._fill
        return self._normalise(x)

    def forward_probs(self, x: np.ndarray) -> np.ndarray:
        """Normalised batch [B, C, H, W] (H, W multiples of 32) -> probabilities [B, K, H, W] float32,
        averaged over this predictor's TTA views (:class:`rsseg.inference.engines.Engine`)."""
        return self.engine(x, self.settings.tta)

    # -- pipeline -----------------------------------------------------------------------------
    def _stack(self, tiles: Sequence[np.ndarray]) -> np.ndarray:
        h, w = tiles[0].shape[-2:]
        ph, pw = padded_size(h), padded_size(w)
        batch = np.stack([reflect_pad(t, ph, pw) for t in tiles])
        if not np.isfinite(batch).all():  # the model must never see NaN/inf: it spreads over a whole window
            raise InputRasterError("the model input holds NaN or infinite values after normalisation; mark them as "
                                   "nodata in the raster (e.g. gdal_edit.py -a_nodata nan) or fill them first")
        return batch

    def run(self, read_window: Callable[[Window], np.ndarray], plan: WindowPlan, on_band: BandCallback,
            on_progress: ProgressFn | None = None, columns: Sequence[Span] | None = None) -> None:
        """Predict every window of ``plan`` and stream blended bands of rows to ``on_band``.

        ``read_window(window)`` returns normalised float32 [C, h, w] and is called only from the
        reader thread; ``on_band(first_row, first_column, probs [K, n, w] float16 array)`` only
        from the blender thread. ``columns``: column strips (e.g.
        :func:`~rsseg.inference.memory.stream_columns`) run one after the other, each top to
        bottom with a blending ring only as wide as its windows; the windows straddling a strip
        border run once per strip. Default: one strip, the whole width.
        The calling thread runs nothing but :meth:`forward_probs` (torch and ONNX Runtime release
        the GIL inside ops, so reading, blending and writing proceed meanwhile). Queues hold one
        batch each way, and every thread drops its reference to a batch as soon as it is handed
        on, so at most ~3 batches of tiles and ~3 of probabilities exist at any time.
        Exceptions from either thread (and Ctrl-C) stop all three and re-raise.
        ``on_progress(done, total)`` (windows) runs in the calling thread after every batch, so it
        may drive UI elements that only that thread may touch (Streamlit); the last call has
        ``done == total``.
        """
        strips = [Span(0, plan.width)] if columns is None else list(columns)
        windows = [w for c in strips for w in plan.windows_of(c)]
        run = _Run(batches=queue.Queue(maxsize=1), results=queue.Queue(maxsize=1))
        threads = [threading.Thread(target=self._read, args=(run, windows, read_window), name="rsseg-reader",
                                    daemon=True),
                   threading.Thread(target=self._blend, args=(run, plan, strips, on_band), name="rsseg-blender",
                                    daemon=True)]
        for t in threads:
            t.start()
        try:
            self._forward(run, len(windows), on_progress)
        except BaseException:
            run.stop.set()
            raise
        finally:
            for t in threads:
                while t.is_alive():
                    t.join(timeout=_POLL_S)
        if run.errors:
            raise run.errors[0]

    def _read(self, run: _Run, windows: list[Window], read_window: Callable[[Window], np.ndarray]) -> None:
        """Reader thread: batches of read, normalised windows, then ``_DONE``."""
        try:
            for i in range(0, len(windows), self.settings.batch):
                chunk = windows[i:i + self.settings.batch]
                if not _put(run.batches, (chunk, self._stack([read_window(w) for w in chunk])), run.stop):
                    return
            _put(run.batches, _DONE, run.stop)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            run.fail(exc)

    def _forward(self, run: _Run, total: int, on_progress: ProgressFn | None) -> None:
        """Calling thread: the model on each batch, probabilities to the blender."""
        n_done = 0
        while (item := _get(run.batches, run.stop)) is not None and item is not _DONE:
            chunk, x = item
            item = None  # free the input batch as soon as the forward is done with it
            # float32 to the blender: a float16 copy here, widened again there, cost the CPU
            # (shared with the model) 89 ms per 7 x 1024 x 1024 window against 37 ms
            probs = self.forward_probs(x)
            x = None
            if not _put(run.results, (chunk, probs), run.stop):
                break
            probs = None
            n_done += len(chunk)
            if on_progress is not None:
                on_progress(n_done, total)
        if item is _DONE:
            _put(run.results, _DONE, run.stop)

    def _blend(self, run: _Run, plan: WindowPlan, strips: list[Span], on_band: BandCallback) -> None:
        """Blender thread: one :class:`RowBlender` per column strip, in turn."""
        try:
            left = iter(strips)
            rb = RowBlender(self.num_classes, plan, on_band, next(left))
            while (item := _get(run.results, run.stop)) is not None and item is not _DONE:
                for w, p in zip(*item):
                    if rb.complete:  # the next strip's windows: drop this ring first
                        rb = None
                        rb = RowBlender(self.num_classes, plan, on_band, next(left))
                    rb.add(w, p[:, : int(w.height), : int(w.width)])
                item = p = None  # drop the batch before blocking on the queue
            if item is _DONE and not (rb.complete and next(left, None) is None):
                raise RuntimeError(f"blender finished {rb.done_rows} of {plan.height} rows of columns "
                                   f"[{rb.columns.start}, {rb.columns.stop})")
        except BaseException as exc:  # noqa: BLE001
            run.fail(exc)

    def predict_probs(self, image: np.ndarray, on_progress: ProgressFn | None = None) -> np.ndarray:
        """Normalised image [C, H, W] (array or CPU/GPU tensor) -> blended probabilities [K, H, W] float32.

        Same window plan, batching, TTA and blending as :func:`rsseg.inference.predict_file`.
        """
        if image.ndim != 3:
            raise ValueError(f"expected an image [C,H,W], got shape {tuple(image.shape)}")
        arr = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image, dtype=np.float32)
        _, h, w = arr.shape
        out = np.empty((self.num_classes, h, w), np.float32)

        def on_band(y0: int, x0: int, probs: np.ndarray) -> None:
            out[:, y0:y0 + probs.shape[1], x0:x0 + probs.shape[2]] = probs

        def read(win: Window) -> np.ndarray:
            return arr[:, win.row_off:win.row_off + win.height, win.col_off:win.col_off + win.width]

        self.run(read, WindowPlan(w, h, self.settings.tile, self.settings.overlap), on_band, on_progress)
        return out

    def predict_array(self, image: np.ndarray, return_probs: bool = False,
                      on_progress: ProgressFn | None = None) -> np.ndarray:
        """Raw image [C, H, W] (in the checkpoint's band order) -> class ids [H, W] uint8,
        or probabilities [K, H, W] float32 with ``return_probs``."""
        if image.ndim != 3 or image.shape[0] != self.meta.in_channels:
            raise InputRasterError(f"image has shape {tuple(image.shape)}; the model needs [{self.meta.in_channels}, H, W] "
                                   f"(bands {', '.join(self.meta.bands)})")
        invalid = ~np.isfinite(image).all(axis=0) if image.dtype.kind == "f" else None
        invalid = invalid if invalid is not None and invalid.any() else None
        probs = self.predict_probs(self.prepare(image, invalid), on_progress)
        if return_probs:
            return probs
        classes = argmax_confidence(probs)[0]
        if invalid is not None:
            classes[invalid] = self.meta.ignore_index
        return classes
