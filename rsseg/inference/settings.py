"""Sliding-window settings: flags override the checkpoint's ``inference`` config section."""

from __future__ import annotations

from torch import nn

from rsseg.checkpoint import ModelMeta
from rsseg.inference.predictor import Predictor, resolve_device

#: default batch on CPU (bench/predict_bench.py: batch 2 keeps a 32k-wide raster near 2 GB)
CPU_MAX_BATCH = 2


def predictor_from_checkpoint_config(
    model: nn.Module,
    meta: ModelMeta,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    batch: int | None = None,
    tta: str | None = None,
    device: str = "auto",
) -> Predictor:
    """A :class:`Predictor` whose unset settings come from the checkpoint's config.

    A tile given without an overlap keeps the configured overlap when it fits, else a quarter of
    the tile, so ``--tile 128`` alone never fails on a default overlap of 256. Without an explicit
    batch, CPUs run at most :data:`CPU_MAX_BATCH` windows at a time.
    """
    inf = meta.build_config().inference
    tile = tile or inf.tile
    if overlap is None:
        overlap = inf.overlap if inf.overlap < tile else tile // 4
    if batch is None:
        # on a CPU a batch of 8 large tiles costs GBs of activations and no throughput
        batch = inf.batch if resolve_device(device).type == "cuda" else min(inf.batch, CPU_MAX_BATCH)
    return Predictor(model, meta, tile=tile, overlap=overlap, batch=batch, tta=tta or inf.tta, device=device)
