"""Predict on a Dask distributed cluster: one task per scene, or row strips of one large raster.

Dask is the geospatial ecosystem's engine (Pangeo; dask-jobqueue starts workers as SLURM/PBS
jobs, dask-cuda one worker per GPU); rsseg schedules nothing itself. Two levels of work:

* **Strips** (one raster, or fewer rasters than workers): the raster is cut into row strips
  aligned to the window grid (:meth:`~rsseg.inference.windows.WindowPlan.row_strips`). A worker
  predicts a strip plus its blending halo (:func:`~rsseg.inference.pipeline.predict_rows`) and
  returns its class ids, confidence and nodata mask; the client hands the strips, in row order, to the
  writers of :func:`~rsseg.inference.pipeline.predict_file` (:class:`StripSource`), so the COG,
  polygons (dissolved across strip borders as across windows) and area report come from the one
  single-process code path and the class raster equals the single-process one.
* **Scenes** (at least as many rasters as workers): each task runs ``predict_file`` for one
  raster on a worker, which writes the outputs (a shared file system).

Workers read their windows straight from the input path (a shared file system or any
GDAL-readable URL) and load the model once per process (:func:`worker_predictor`); the client
never loads it: it plans from the checkpoint's metadata (:meth:`RemoteModel.plan`). The Dask
scheduler reruns a task whose worker died (up to ``distributed.scheduler.allowed-failures``
times); strips are pure, so a rerun strip gives the same rows. Errors raised by a task (a bad
input) are not retried: they would fail again.
A failed run leaves nothing at the targets: strip runs write through ``predict_file``'s atomic
writers; when a scene fails, the others stop at their next batch (a Dask ``Event``; Dask cannot
stop a running task), the run waits for them, removes the scenes that finished and raises.

Importing this module imports Dask; nothing else in rsseg does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from distributed import Client, Event, Future, LocalCluster, as_completed, wait
from rasterio.errors import RasterioError

from rsseg.checkpoint import ModelMeta, is_onnx_model, read_meta
from rsseg.errors import BackendUnavailableError, ConfigError, InputRasterError, RsSegError
from rsseg.inference.contract import input_mapping
from rsseg.inference.input_checks import select_bands
from rsseg.inference.memory import block_cache
from rsseg.inference.pipeline import EmitFn, PredictResult, predict_file, predict_rows
from rsseg.inference.predictor import Predictor
from rsseg.inference.products import Rows
from rsseg.inference.settings import PredictSettings, check_settings, resolve_tiling
from rsseg.inference.windows import Span, WindowPlan
from rsseg.io import Staging, is_remote, open_raster, unfold_url
from rsseg.progress import ProgressFn

#: a strip's result (class ids, confidence, mask: ~4 bytes a pixel) stays below this many pixels
STRIP_PIXELS = 64 * 2**20
#: strips per worker when a raster is cut: enough to even out uneven workers, few enough that
#: the halo (one row of windows per strip) costs little
STRIPS_PER_WORKER = 2

_LOCK = threading.Lock()
_PREDICTORS: dict[tuple, Predictor] = {}
#: models loaded by this process (one per worker unless the checkpoint or settings change)
LOADS = 0


def parse_dask(spec: str) -> tuple[str | None, int | None]:
    """``local`` / ``local:N`` -> (None, N or None); ``tcp://host:port`` (any scheme) -> (address, None)."""
    if spec == "local" or spec.startswith("local:"):
        n = spec.partition(":")[2]
        if n and (not n.isdigit() or int(n) < 1):
            raise ConfigError(f"--dask {spec}: the worker count must be a positive integer, e.g. local:4")
        return None, int(n) if n else None
    if "://" not in spec:
        raise ConfigError(f"--dask {spec!r} is neither local[:N] nor a scheduler address like tcp://host:8786")
    return spec, None


@contextlib.contextmanager
def dask_client(spec: str, quiet: bool = True) -> Iterator[Client]:
    """A client for ``--dask``: a new LocalCluster of N single-threaded worker processes
    (``local[:N]``, N defaults to cores / 4), or the scheduler at an address. ``quiet``: a local
    cluster logs nothing below CRITICAL (a failed task's worker would print its traceback to the
    terminal; the client raises the error as one line)."""
    address, n = parse_dask(spec)
    if address is not None:
        try:
            client = Client(address, timeout="30s")
        except OSError as exc:
            raise BackendUnavailableError(f"cannot reach the Dask scheduler at {address}: {exc}; start it first "
                                          "(dask scheduler, or dask-jobqueue) or use --dask local") from None
        with client:
            yield client
        return
    cores = os.cpu_count() or 1
    n = n or max(1, cores // 4)
    # Dask pins OMP threads to 1 in workers; share the cores among the worker processes instead
    env = {"OMP_NUM_THREADS": str(max(1, cores // n))}
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None, env=env,
                      silence_logs=logging.CRITICAL if quiet else logging.WARNING) as cluster, \
            Client(cluster) as client:
        yield client


def worker_predictor(checkpoint: str, settings: PredictSettings) -> Predictor:
    """This process's predictor for ``checkpoint`` with ``settings``, loaded at its first task only."""
    global LOADS
    key = (str(checkpoint), settings)
    with _LOCK:
        if key not in _PREDICTORS:
            _PREDICTORS.clear()  # one model per worker: a new checkpoint replaces the old one
            threads = os.environ.get("OMP_NUM_THREADS")
            if threads and threads.isdigit() and not is_onnx_model(checkpoint):  # torch's pool; .onnx runs without torch
                import torch

                torch.set_num_threads(int(threads))
            _PREDICTORS[key] = Predictor.from_checkpoint(checkpoint, settings)
            LOADS += 1
        return _PREDICTORS[key]


@dataclass(frozen=True)
class RemoteModel:
    """The client's view of a model that runs on the workers: its checkpoint, metadata and the
    settings the workers get. Tile, overlap and TTA are resolved here (they define the row strips,
    so every worker must use the client's); batch, device and engine resolve on each worker."""

    checkpoint: str
    meta: ModelMeta
    settings: PredictSettings

    @classmethod
    def plan(cls, checkpoint: str | Path, settings: PredictSettings | None = None) -> RemoteModel:
        """Read ``checkpoint``'s metadata (without importing torch) and fix the strip-defining settings."""
        settings = settings or PredictSettings()
        meta = read_meta(checkpoint)
        tile, overlap, tta = resolve_tiling(meta, settings.tile, settings.overlap, settings.tta)
        # the batch resolves on each worker; an explicit one is checked here
        check_settings(replace(settings, tile=tile, overlap=overlap, tta=tta,
                               batch=1 if settings.batch is None else settings.batch))
        return cls(str(Path(checkpoint).resolve()), meta, replace(settings, tile=tile, overlap=overlap, tta=tta))


@dataclass
class Strip:
    """One strip's rows as a worker returns them."""

    y0: int
    classes: np.ndarray
    confidence: np.ndarray
    nodata: np.ndarray | None
    probs: np.ndarray | None


def predict_strip(checkpoint: str, settings: PredictSettings, input_path: str, bands: list[int] | None,
                  rows: Span, need_probs: bool, scale: float | str | None = None,
                  asset: str | None = None, allow_local_assets: bool = False) -> Strip:
    """Task: predict the row strip ``rows`` of ``input_path`` on this worker (see :func:`predict_rows`);
    ``scale``, ``asset`` and ``allow_local_assets`` as :func:`~rsseg.inference.pipeline.predict_file` takes them.
    A failure leaves as an error the client can rebuild (:func:`_portable`)."""
    try:
        return _predict_strip(checkpoint, settings, input_path, bands, rows, need_probs, scale, asset,
                              allow_local_assets)
    except BaseException as exc:
        err = _portable(exc, input_path)
    raise err  # outside the handler: nothing chained to it


def _predict_strip(checkpoint: str, settings: PredictSettings, input_path: str, bands: list[int] | None,
                   rows: Span, need_probs: bool, scale: float | str | None, asset: str | None,
                   allow_local_assets: bool) -> Strip:
    predictor = worker_predictor(checkpoint, settings)
    parts: list[tuple[Rows, np.ndarray | None]] = []

    def keep(band: Rows, probs: np.ndarray | None) -> None:
        # probs is a view of the blender's ring: copy what must outlive the call
        parts.append((band, probs.copy() if need_probs and probs is not None else None))

    with open_raster(input_path, asset=asset, allow_local_assets=allow_local_assets) as src, \
            block_cache(src, predictor.settings.tile), \
            open_raster(input_path, asset=asset, allow_local_assets=allow_local_assets) as reader_src:
        sel = select_bands(src, predictor.meta, bands)
        mapping = input_mapping(src, predictor.meta, sel, input_path, scale)
        predict_rows(predictor, src, reader_src, sel, keep, rows=rows, mapping=mapping, name=input_path)
    masks = [r.nodata for r, _ in parts]
    return Strip(
        y0=rows.start,
        classes=np.concatenate([r.classes for r, _ in parts]),
        confidence=np.concatenate([r.confidence for r, _ in parts]),
        nodata=None if all(m is None for m in masks) else np.concatenate(
            [m if m is not None else np.zeros(r.classes.shape, bool) for (r, _), m in zip(parts, masks)]),
        probs=np.concatenate([p for _, p in parts], axis=1) if need_probs else None,
    )


def _portable(exc: BaseException, input_path: str) -> BaseException:
    """A task's failure as the client can rebuild it, so ``rsseg predict --dask`` prints its one
    line: an rsseg error without the GDAL errors it was raised from (Dask pickles the chain, and
    rasterio's errors cannot be unpickled: the client would get a bare ``Exception`` and a
    traceback), a read failure (GDAL, the file system) as one line naming the input; anything else
    (a bug) as it is."""
    if isinstance(exc, RsSegError):
        exc.__cause__ = exc.__context__ = None
        return exc
    if not isinstance(exc, (RasterioError, OSError)):
        return exc
    text = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
    return InputRasterError(f"cannot read input raster {input_path} on a Dask worker: {text}; check that every "
                            "worker can read it (a shared file system or a URL) and that the file is complete")


def _cancel(futures: Sequence[Future]) -> None:
    for f in futures:
        f.cancel()


@dataclass
class StripSource:
    """``predict_file``'s rows computed as row strips on a Dask cluster (a ``RowSource``).

    ``on_progress(done, total)`` counts finished strips, from the calling thread. Strips are
    fetched and written strictly in row order, each as soon as it and all earlier ones are done,
    so the client holds one strip at a time; workers keep finished later strips meanwhile.
    """

    client: Client
    model: RemoteModel
    input_path: str
    need_probs: bool = False
    window_rows: int | None = None
    scale: float | str | None = None
    asset: str | None = None
    allow_local_assets: bool = False

    @property
    def device(self) -> str:
        return f"dask ({self.model.settings.device} workers)"

    def _window_rows(self, plan: WindowPlan) -> int:
        if self.window_rows is not None:
            return self.window_rows
        step = plan.tile - plan.overlap
        workers = max(1, len(self.client.scheduler_info(n_workers=-1)["workers"]))
        by_share = -(-len(plan.row_starts) // (STRIPS_PER_WORKER * workers))
        by_memory = max(1, STRIP_PIXELS // max(1, plan.width * step))
        return max(1, min(by_share, by_memory))

    def __call__(self, src: rasterio.DatasetReader, sel: list[int], emit: EmitFn,
                 on_progress: ProgressFn | None) -> None:
        s = self.model.settings
        plan = WindowPlan(src.width, src.height, s.tile, s.overlap)
        token = uuid.uuid4().hex[:12]
        futures = [self.client.submit(predict_strip, self.model.checkpoint, s, self.input_path, sel, rows,
                                      self.need_probs, self.scale, self.asset, self.allow_local_assets,
                                      key=f"rsseg-strip-{token}-{i}")
                   for i, rows in enumerate(plan.row_strips(self._window_rows(plan)))]
        try:
            done = set()
            nxt = 0
            for fut in as_completed(futures):
                if fut.status == "error":
                    fut.result()  # raises the worker's exception here: the first failure
                done.add(fut.key)
                if on_progress is not None:
                    on_progress(len(done), len(futures))
                while nxt < len(futures) and futures[nxt].key in done:
                    strip: Strip = futures[nxt].result()
                    futures[nxt].release()
                    emit(Rows(strip.y0, strip.classes, strip.confidence, strip.nodata), strip.probs)
                    nxt += 1
        finally:
            _cancel(futures)


def predict_file_dask(client: Client, model: RemoteModel, input_path: str | Path, output_path: str | Path, *,
                      window_rows: int | None = None, **kwargs: Any) -> PredictResult:
    """:func:`predict_file` with the rows computed as row strips on ``client``'s workers, which
    load ``model`` themselves. ``kwargs`` are ``predict_file``'s (outputs, bands, products,
    on_progress: strips finished)."""
    source = StripSource(client, model, _input_name(input_path), need_probs=bool(kwargs.get("products")),
                         window_rows=window_rows, scale=kwargs.get("scale"), asset=kwargs.get("asset"),
                         allow_local_assets=kwargs.get("allow_local_assets", False))
    return predict_file(model, input_path, output_path, rows_source=source, **kwargs)


def _input_name(path: str | Path) -> str:
    """Local paths absolute (workers may run elsewhere in the tree); GDAL paths (/vsi, URLs) as they are."""
    name = unfold_url(str(path))
    return name if name.startswith("/vsi") or is_remote(name) else str(Path(name).resolve())


class _Stopped(RsSegError):
    """A scene task gave up because another scene of its run failed or the run was interrupted."""


def _scene_task(checkpoint: str, settings: PredictSettings, input_path: str, output_path: str,
                kwargs: dict[str, Any], stop_event: str) -> PredictResult:
    """Task: the whole single-process ``predict_file`` of one scene on this worker, its outputs
    staged beside their targets for the client to commit with the other scenes'; it stops at its
    next batch once the run's ``stop_event`` is set (its writers then remove their temporaries)."""
    stop = Event(stop_event)

    def check(done: int, total: int) -> None:
        if stop.is_set():
            raise _Stopped(f"{input_path}: stopped because another scene of the run failed")

    try:
        check(0, 0)
        return predict_file(worker_predictor(checkpoint, settings), input_path, output_path, **kwargs,
                            on_progress=check, stage=Staging())
    except BaseException as exc:
        err = _portable(exc, input_path)
    raise err  # outside the handler: nothing chained to it


def predict_scenes_dask(client: Client, model: RemoteModel, jobs: Sequence[tuple[str | Path, dict[str, Any]]], *,
                        on_progress: ProgressFn | None = None, **kwargs: Any) -> list[PredictResult]:
    """One task per scene: ``jobs`` are (input, {"output_path": ..., other targets}); ``kwargs``
    are the ``predict_file`` options shared by all scenes. Workers write the outputs (a file
    system they share with the client) staged beside their targets, and the client renames them
    onto the targets once every scene is complete. If any scene fails the others are cancelled,
    every staged output removed (old outputs stay as they were), and the first error raised as one
    line; ``on_progress`` counts scenes."""
    token = uuid.uuid4().hex[:12]
    stop = Event(f"rsseg-stop-{token}", client=client)
    futures = []
    for i, (src, targets) in enumerate(jobs):
        targets = {k: (str(Path(v).resolve()) if v is not None else None) for k, v in targets.items()}
        out = targets.pop("output_path")
        futures.append(client.submit(_scene_task, model.checkpoint, model.settings, _input_name(src), out, {**kwargs, **targets},
                                     stop.name, key=f"rsseg-scene-{token}-{i}"))
    order = {f.key: i for i, f in enumerate(futures)}
    results: list[PredictResult | None] = [None] * len(futures)
    try:
        for n, fut in enumerate(as_completed(futures), 1):
            results[order[fut.key]] = fut.result()
            if on_progress is not None:
                on_progress(n, len(futures))
    except BaseException:
        # Dask cannot stop a task that is running: the scenes stop at their next batch, and the
        # run waits for them so that none leaves its temporaries after this run has failed
        stop.set()
        wait(futures)
        for fut in futures:  # all or nothing: drop what the finished scenes staged
            if fut.status == "finished" and fut.result().stage is not None:
                fut.result().stage.discard()
        raise
    for result in results:  # every scene is complete: only now do new outputs replace old ones
        staged = result.stage.targets()
        result.stage.commit()
        result.stage = None
        result.files = [p for p in dict.fromkeys([*result.files, *staged]) if p.exists()]
    return results  # type: ignore[return-value]


def use_scenes(client: Client, n_inputs: int) -> bool:
    """One task per scene when there are at least as many scenes as workers, else strips."""
    return n_inputs > 1 and n_inputs >= len(client.scheduler_info(n_workers=-1)["workers"])
