"""ONNX export of the lean inference graph (logits only) of a UNetFormer."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from rsseg.errors import ConfigError
from rsseg.io import atomic_path
from rsseg.models.unetformer import UNetFormer


class _Inference(nn.Module):
    """Eval-mode forward only: [B, C, H, W] -> logits [B, K, H, W] (no aux, no embedding)."""

    def __init__(self, model: UNetFormer) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def export_onnx(
    model: UNetFormer,
    path: str | Path,
    in_channels: int,
    height: int = 512,
    width: int = 512,
    opset: int | None = None,
    *,
    dynamic: bool = True,
) -> Path:
    """Write ``model``'s inference graph to ``path`` (atomically) and return the path.

    Input ``image`` [batch, in_channels, H, W] float32, output ``logits`` [batch, K, H, W].
    The batch is always dynamic. With ``dynamic=True`` H and W are too (any size >= 2;
    ``height``/``width`` only size the tracing example, keep them >= 256 so no stage of the
    pyramid is traced at a single attention window); tracing symbolic sizes is slow (tens of
    seconds on a laptop CPU). With ``dynamic=False`` the graph accepts only ``height x width``.
    The model's train/eval state is restored afterwards.
    """
    path = Path(path)
    device = next(model.parameters()).device
    # batch 2: with batch 1 broadcasting rules would pin the batch dimension to 1
    example = torch.zeros(2, in_channels, height, width, device=device)
    auto = torch.export.Dim.AUTO
    dims = {0: auto, 2: auto, 3: auto} if dynamic else {0: auto}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter is chatty about its own internals
            program = torch.export.export(_Inference(model), (example,), dynamic_shapes=(dims,), strict=False)
            shape = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == "x").meta["val"].shape
            pinned = [i for i in dims if not isinstance(shape[i], torch.SymInt)]
            if pinned:
                raise ConfigError(
                    f"ONNX export fixed input dimension(s) {pinned} of shape {tuple(shape)} to the example size; "
                    "export with a larger example height/width (e.g. 512) or dynamic=False"
                )
            with atomic_path(path) as tmp:
                torch.onnx.export(
                    program,
                    (example,),
                    str(tmp),
                    input_names=["image"],
                    output_names=["logits"],
                    opset_version=opset,
                    dynamo=True,
                    external_data=False,
                    verbose=False,  # library code prints nothing (the exporter reports its steps otherwise)
                )
    finally:
        model.train(was_training)
    return path
