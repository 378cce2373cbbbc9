"""Sliding-window settings: flags override the checkpoint's ``inference`` config section."""

from __future__ import annotations

from torch import nn

from rsseg.checkpoint import ModelMeta
from rsseg.inference.predictor import Predictor


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
    the tile, so ``--tile 128`` alone never fails on a default overlap of 256.
    """
    inf = meta.build_config().inference
    tile = tile or inf.tile
    if overlap is None:
        overlap = inf.overlap if inf.overlap < tile else tile // 4
    return Predictor(model, meta, tile=tile, overlap=overlap, batch=batch or inf.batch, tta=tta or inf.tta, device=device)
