"""The engineering of training: devices, precision, checkpoints, logging, resume.

``train(cfg, out_dir)`` is what ``rsseg train`` and ``rsseg demo`` call.
"""

from __future__ import annotations

import errno
import importlib.util
import logging
import os
import shutil
import signal
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from rsseg.checkpoint import META_KEY, ModelMeta, check_weights, model_state, read_checkpoint
from rsseg.config import Config, config_to_yaml
from rsseg.errors import CacheWarning, CheckpointError, ConfigError, OutputExistsError, OutputPathError
from rsseg.io import atomic_path
from rsseg.runconfig import absolute_root
from rsseg.training.curves import write_curves

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints are written beside the target and renamed when complete, so Ctrl-C or a crash
    during a save leaves the previous ``last.ckpt``/``best.ckpt`` intact."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                super().save_checkpoint(checkpoint, tmp, storage_options)
        except OSError as exc:
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            raise OutputPathError(
                f"cannot write checkpoint {path}: {exc.strerror or exc}; "
                + ("free space on that disk or train with -o on another one" if full else "check that -o is writable")
                + f" (the previous {path.name}, if any, is intact)"
            ) from None


@dataclass
class TrainResult:
    run_dir: Path
    best: Path | None
    last: Path | None
    best_miou: float | None
    interrupted: bool


def resolve_accelerator(devices: str | int | None, precision: str | None) -> tuple[str, Any, str]:
    """GPU when present (bf16 mixed precision), CPU otherwise (float32)."""
    cuda = torch.cuda.is_available()
    accelerator = "gpu" if cuda else "cpu"
    if devices in (None, "auto"):
        devices = "auto" if cuda else 1
    if precision in (None, "auto"):
        precision = "bf16-mixed" if cuda and torch.cuda.is_bf16_supported() else ("16-mixed" if cuda else "32-true")
    return accelerator, devices, precision


def check_optim(cfg: Config) -> None:
    """Refuse training settings that cannot train, before any work (Lightning would accept
    ``max_epochs=0`` and write nothing, and torch would fail deep inside on ``lr<=0``)."""
    o = cfg.optim
    if not o.lr > 0:
        raise ConfigError(f"config key 'optim.lr' must be a positive learning rate, got {o.lr}; e.g. optim.lr=5e-4")
    if o.batch_size < 1:
        raise ConfigError(f"config key 'optim.batch_size' must be at least 1, got {o.batch_size}; e.g. --batch-size 8")
    if o.max_epochs < 1:
        raise ConfigError(f"config key 'optim.max_epochs' must be at least 1, got {o.max_epochs}; e.g. --max-epochs 5")


def check_run_dir(run_dir: Path, overwrite: bool = False) -> Path | None:
    """Refuse a run directory that cannot be written, or that already holds checkpoints (without
    ``overwrite``), before any work. Returns the first part of ``run_dir`` that does not exist yet
    (what this run creates, and removes if it fails early)."""
    held = sorted(p.name for p in run_dir.glob("*.ckpt")) if run_dir.is_dir() else []
    if held and not overwrite:
        raise OutputExistsError(f"run directory {run_dir} already holds checkpoints ({', '.join(held)}); "
                                "pass --overwrite to replace them, --resume to continue, or choose another -o")
    missing = None
    probe = run_dir
    while not probe.exists():
        missing, probe = probe, probe.parent
    if not probe.is_dir():
        raise OutputPathError(f"run directory {run_dir}: {probe} is a file, not a folder; choose another -o")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputPathError(f"run directory {run_dir}: {probe} is not writable; choose another -o")
    return missing


def check_resume(path: str | Path) -> ModelMeta:
    """Refuse a ``--resume`` file before Lightning loads it: it must read with
    ``torch.load(weights_only=True)`` (untrusted files never run code, the loader predict uses),
    carry rsseg metadata and hold a whole training state. Returns its metadata."""
    ckpt = read_checkpoint(path)
    if not {"optimizer_states", "loops", "epoch"} <= set(ckpt):
        raise CheckpointError(f"--resume {path} holds weights but no training state (epoch, optimizer; a run's "
                              "best.ckpt keeps weights only): resume from last.ckpt in the same run folder, or "
                              "start from these weights with --init-from")
    check_weights(model_state(ckpt), path)
    return ModelMeta.from_dict(ckpt[META_KEY])


def check_same_run(path: str | Path, source: ModelMeta, meta: ModelMeta) -> None:
    """Refuse resuming a checkpoint ``source`` into a run with other classes, bands or model settings."""
    for what in ("classes", "bands"):
        if getattr(source, what) != getattr(meta, what):
            raise CheckpointError(f"--resume {path} was trained with {what} {getattr(source, what)} but this run has "
                                  f"{getattr(meta, what)}; resume with the config it was trained with")
    model, source_model = meta.config.get("model", {}), source.config.get("model", {})
    differ = sorted(k for k in model if k not in ("pretrained", "weights") and model[k] != source_model.get(k))
    if differ:
        raise CheckpointError(f"--resume {path} was trained with other model settings ({', '.join(differ)}); "
                              f"resume with its config: {source_model}")


def _loggers(run_dir: Path) -> list[Logger]:
    # a new version_N per run, so resuming into the same directory never erases earlier logs
    loggers: list[Logger] = [CSVLogger(run_dir, name="logs")]
    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        loggers.append(TensorBoardLogger(run_dir, name="tensorboard"))
    return loggers


def _quiet_lightning() -> None:
    """Lightning's start-up banners and tips (accelerator lines, the litlogger advert) at INFO
    drown the progress bar, and its own handler on ``lightning`` printed each line a second time
    beside the root handler; rsseg keeps Lightning's warnings, once, through the root logger.
    Debug logging (``rsseg -v``) keeps everything."""
    verbose = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        if not verbose:
            logger.setLevel(logging.WARNING)
        if logging.getLogger().hasHandlers():
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True


def _write_curves(run_dir: Path) -> None:
    """``curves.png`` of the epochs logged so far (also after Ctrl-C); a plot that fails must not
    turn a finished training into a failed one."""
    try:
        write_curves(run_dir)
    except Exception as exc:  # noqa: BLE001 - any plotting failure is reported, not raised
        warnings.warn(f"could not draw {run_dir / 'curves.png'}: {exc}", CacheWarning, stacklevel=2)


def build_meta(cfg: Config, dm: Any) -> ModelMeta:
    from rsseg.inference.contract import measure_samples, measure_training_input

    stats = dm.stats  # training split, cached per dataset root
    files = dm.input_files("train")
    # the input contract: measured on the training files, or on the samples of a datamodule hiding them
    contract = measure_training_input(files) if files else measure_samples(dm.input_samples("train"))
    return ModelMeta(
        classes=list(dm.classes),
        colors=list(dm.colors),
        bands=list(dm.bands),
        mean=[float(v) for v in dm.mean],
        std=[float(v) for v in dm.std],
        scale=float(dm.scale),
        ignore_index=int(dm.ignore_index),
        patch_size=cfg.optim.crop_size,
        gsd=dm.gsd,
        config=cfg.to_dict(),
        class_pixel_freq=list(stats.pixel_frequencies),
        class_region_freq=[n / max(1, stats.num_images) for n in stats.region_counts],
        **contract,
    )


def init_weights(model: torch.nn.Module, path: str | Path, meta: ModelMeta) -> None:
    """Copy the weights of the checkpoint ``path`` into ``model``, whose classes and bands must match."""
    from rsseg.checkpoint import load_model

    source, source_meta = load_model(path)
    for what in ("classes", "bands"):
        if getattr(source_meta, what) != getattr(meta, what):
            raise CheckpointError(
                f"--init-from {path} has {what} {getattr(source_meta, what)} but the training config has "
                f"{getattr(meta, what)}; set dataset.{what} to match"
            )
    target, weights = model.state_dict(), source.state_dict()
    wrong = [k for k in target if k not in weights or weights[k].shape != target[k].shape]
    wrong += [k for k in weights if k not in target]
    if wrong:
        raise CheckpointError(
            f"--init-from {path} was built with another model config ({len(wrong)} tensors differ, e.g. {', '.join(wrong[:3])}); "
            f"use its model settings: {source_meta.config.get('model')}"
        )
    model.load_state_dict(weights)


def _remove_if_empty(created: Path | None) -> None:
    """Remove the run directory this run created when it failed before any checkpoint was written."""
    if created is not None and created.is_dir() and not any(created.rglob("*.ckpt")):
        shutil.rmtree(created, ignore_errors=True)


def train(
    cfg: Config,
    out_dir: str | Path,
    *,
    devices: str | int | None = "auto",
    num_nodes: int = 1,
    precision: str | None = "auto",
    resume: str | Path | None = None,
    init_from: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    callbacks: list[L.Callback] | None = None,
    trainer_options: dict[str, Any] | None = None,
    allow_ignored: bool = False,
    on_labels: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``cfg`` and write ``best.ckpt`` (by validation mIoU) and ``last.ckpt`` under ``out_dir``.

    ``devices`` per node (GPUs, or CPU processes when there is no GPU) times ``num_nodes``
    processes train with DDP (NCCL on GPUs, gloo on CPUs); every parameter receives a gradient
    each step, so DDP runs without unused-parameter detection. ``trainer_options``: extra
    ``lightning.Trainer`` arguments for benchmarks (e.g. ``limit_train_batches``,
    ``check_val_every_n_epoch``).
    ``init_from``: start from the weights of an rsseg checkpoint (e.g. one made by ``rsseg import``)
    with a fresh optimizer and schedule; ``resume`` continues a run instead (into ``out_dir`` even
    when it holds checkpoints); otherwise a run directory with checkpoints needs ``overwrite``.
    ``dataset.root`` is stored absolute, so the checkpoint finds its dataset from any directory.
    ``allow_ignored``: train on labels that :func:`rsseg.data.stats.check_labels` refuses (a class
    with no pixel beside unmatched mask colours, most pixels ignored). ``on_labels`` receives one
    line on what the training labels leave out (:func:`rsseg.data.stats.describe_labels`) before training.
    """
    from rsseg.data.datasets import build_datamodule, get_dataset
    from rsseg.data.stats import check_labels, describe_labels, log_region_prior
    from rsseg.losses.regularizers import needs_region_prior
    from rsseg.models.weights import prepare as prepare_weights
    from rsseg.training.task import SegmentationTask

    run_dir = Path(out_dir)
    cfg = absolute_root(cfg)
    check_optim(cfg)
    # before anything is written or read: an offline machine stops here with the ways on
    prepare_weights(cfg.model.encoder, cfg.model.pretrained, cfg.model.weights, cfg.dataset.bands, cfg.dataset.normalization)
    created = check_run_dir(run_dir, overwrite=overwrite or resume is not None)
    if resume is not None and init_from is not None:
        raise ConfigError("give --init-from (weights only) or --resume (a whole run), not both")
    resumed = check_resume(resume) if resume is not None else None
    L.seed_everything(cfg.optim.seed, workers=True, verbose=False)

    dm = build_datamodule(cfg)
    # labels that would train silently wrong are refused before the model, the run directory or
    # the validation pass
    check_labels(dm.stats, dm.classes, dm.colors, allow_ignored)
    meta = build_meta(cfg, dm)
    prior = log_region_prior(dm.stats) if needs_region_prior(cfg.loss.regularizers) else None
    # every validation file is read once before training (cached like the training statistics),
    # so a corrupt file or a bad mask is refused now rather than after the first epoch
    get_dataset(cfg.dataset.name).split_stats(cfg, "val")
    if resumed is not None:
        check_same_run(resume, resumed, meta)
    task = SegmentationTask(cfg, meta, log_region_prior=prior)
    if init_from is not None:
        init_weights(task.model, init_from, meta)
    labels_text = describe_labels(dm.stats, dm.classes, dm.colors)
    if on_labels is not None and labels_text is not None:  # every check passed: training starts
        on_labels(labels_text)
    _write_run_config(run_dir, cfg, created)
    # Lightning warns about a non-empty checkpoint directory; rsseg's own config.yaml (and a resumed
    # run's files) are no reason to, other files are
    fresh_dir = resume is not None or all(p.name == "config.yaml" for p in run_dir.iterdir())
    trainer, best_cb = _build_trainer(cfg, run_dir, devices, num_nodes, precision, progress, callbacks, trainer_options)
    _fit(trainer, task, dm, resume, created, fresh_dir)
    return _finish(trainer, best_cb, run_dir, created)


def _finish(trainer: L.Trainer, best_cb: ModelCheckpoint, run_dir: Path, created: Path | None) -> TrainResult:
    """What a run left (also after Ctrl-C): its checkpoints, best score and ``curves.png``."""
    if trainer.interrupted:
        _remove_if_empty(created)
    best = Path(best_cb.best_model_path) if best_cb.best_model_path else None
    last = run_dir / "last.ckpt"
    score = best_cb.best_model_score
    if trainer.is_global_zero:
        _write_curves(run_dir)  # also after Ctrl-C: the epochs logged so far
    return TrainResult(
        run_dir=run_dir,
        best=best if best and best.is_file() else None,
        last=last if last.is_file() else None,
        best_miou=float(score) if score is not None else None,
        interrupted=trainer.interrupted,
    )


def _write_run_config(run_dir: Path, cfg: Config, created: Path | None) -> None:
    """``config.yaml`` of the run (the resolved config), before any training."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(run_dir / "config.yaml") as tmp:
            tmp.write_text(config_to_yaml(cfg))
    except OSError as exc:
        _remove_if_empty(created)
        raise OutputPathError(f"cannot write the run directory {run_dir}: {exc.strerror or exc}; choose another -o") from None


def _build_trainer(cfg: Config, run_dir: Path, devices: str | int | None, num_nodes: int, precision: str | None,
                   progress: bool, callbacks: list[L.Callback] | None,
                   trainer_options: dict[str, Any] | None) -> tuple[L.Trainer, ModelCheckpoint]:
    """The Lightning trainer of a run and its best-checkpoint callback."""
    accelerator, devices, precision = resolve_accelerator(devices, precision)
    n_devices = torch.cuda.device_count() if devices == "auto" else (devices if isinstance(devices, int) else 1)
    if num_nodes < 1:
        raise ConfigError(f"--num-nodes must be >= 1 (got {num_nodes})")
    strategy = "ddp" if n_devices * num_nodes > 1 else "auto"
    # best.ckpt is for predicting: weights and the rsseg metadata (written by the task's
    # on_save_checkpoint, which Lightning calls for weights-only saves too), no optimizer state,
    # about a third of the size; last.ckpt keeps the whole training state for --resume
    best_cb = ModelCheckpoint(
        dirpath=run_dir, filename="best", monitor="val/mIoU", mode="max", save_top_k=1, enable_version_counter=False,
        save_weights_only=True,
    )
    # its own callback: Lightning's save_last only writes when the best improved, leaving a stale
    # last.ckpt (and a resume that repeats epochs) after an epoch without a new best
    last_cb = ModelCheckpoint(dirpath=run_dir, filename="last", monitor=None, save_top_k=1, enable_version_counter=False)
    _quiet_lightning()
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        precision=precision,
        max_epochs=cfg.optim.max_epochs,
        callbacks=[best_cb, last_cb, LearningRateMonitor(logging_interval="epoch"), *(callbacks or [])],
        logger=_loggers(run_dir),
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=progress,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        default_root_dir=run_dir,
        **(trainer_options or {}),
    )
    log.info("training on %s (%s devices, precision %s)", accelerator, devices, precision)
    return trainer, best_cb


def _fit(trainer: L.Trainer, task: L.LightningModule, dm: L.LightningDataModule, resume: str | Path | None,
         created: Path | None, fresh_dir: bool) -> None:
    """``trainer.fit``; Ctrl-C ends it gracefully (``trainer.interrupted``), any other failure
    removes the run directory this run created when it holds no checkpoint. ``fresh_dir``: the
    run directory holds only this run's files (no warning that it is not empty)."""
    with warnings.catch_warnings():
        # Lightning's advice about num_workers is noise for the small CPU runs this tool targets
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        # Lightning's own use of a torch pytree API torch deprecated; nothing a user can act on
        warnings.filterwarnings("ignore", r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
        if fresh_dir:
            warnings.filterwarnings("ignore", ".*exists and is not empty.*")
        try:
            # weights_only: even with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 set, a resumed file never runs code
            trainer.fit(task, datamodule=dm, ckpt_path=str(resume) if resume else None, weights_only=True)
        except SystemExit:
            # Lightning turns Ctrl-C into a graceful shutdown followed by sys.exit(1) and leaves
            # SIGINT ignored; report the interruption instead and give Ctrl-C back to the user.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            if not trainer.interrupted:
                _remove_if_empty(created)
                raise
        except BaseException:
            _remove_if_empty(created)
            raise
