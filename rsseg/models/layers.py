"""Convolution building blocks and shape helpers shared by the UNetFormer decoder.

Naming follows UNetFormer (Wang et al., ISPRS JPRS 2022): ``ConvBN`` is conv + BatchNorm,
``ConvBNReLU`` adds ReLU6, the separable variants are a depthwise kxk conv followed by a
pointwise 1x1 conv. Convolutions feeding a BatchNorm carry no bias (the norm's shift replaces it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _same_padding(kernel_size: int) -> int:
    # the reference pads (k - 1) // 2, so an even kernel (the 8x8 projection) shrinks the map by one
    # pixel; callers pad by one beforehand to keep the size
    return (kernel_size - 1) // 2


class ConvBN(nn.Sequential):
    """``Conv2d(k, bias=False) -> BatchNorm2d``: [B, C_in, H, W] -> [B, C_out, H, W]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=_same_padding(kernel_size), bias=False),
            nn.BatchNorm2d(out_channels),
        )


class ConvBNReLU(nn.Sequential):
    """``Conv2d(k, bias=False) -> BatchNorm2d -> ReLU6``: [B, C_in, H, W] -> [B, C_out, H, W]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=_same_padding(kernel_size), bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(),
        )


class SeparableConvBN(nn.Sequential):
    """Depthwise ``k x k`` conv -> BatchNorm2d -> pointwise 1x1 conv (no bias).

    [B, C_in, H, W] -> [B, C_out, H + 2p - k + 1, W + 2p - k + 1] with ``p = (k - 1) // 2``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels,
                in_channels,
                kernel_size,
                padding=_same_padding(kernel_size),
                groups=in_channels,
                bias=False,
            ),
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
        )


def reflect_pad_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Extend ``x`` [B, C, H, W] at the bottom and right by reflection to [B, C, height, width].

    Unlike a single ``F.pad(mode="reflect")`` this accepts any pad amount (the reflection
    repeats, a size-1 axis is replicated), which small inputs need: a 64x64 tile has a 2x2
    stride-32 map that the 8x8 attention windows must pad to 8x8. While exporting, the same
    reflection is an ``arange``/``index_select`` gather so the pad amount stays symbolic
    (dynamic-size ONNX graphs); elsewhere native pads are faster and ``torch.compile`` friendly.
    """
    if torch.compiler.is_exporting():
        return _reflect_gather(x, height, width)
    return _reflect_pad_axis(_reflect_pad_axis(x, height, -2), width, -1)


def _reflect_pad_axis(x: torch.Tensor, target: int, dim: int) -> torch.Tensor:
    while x.shape[dim] < target:
        size = x.shape[dim]
        # one reflect pad adds at most size - 1; the padded map then reflects again (periodic)
        amount = target - size if size == 1 else min(target - size, size - 1)
        x = F.pad(x, (0, 0, 0, amount) if dim == -2 else (0, amount, 0, 0), mode="replicate" if size == 1 else "reflect")
    return x


def _reflect_gather(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return x.index_select(-2, _reflect_index(x.shape[-2], height, x.device)).index_select(
        -1, _reflect_index(x.shape[-1], width, x.device)
    )


def _reflect_index(size: int, target: int, device: torch.device) -> torch.Tensor:
    # triangle wave with period 2 * (size - 1): 0, 1, .., size-1, size-2, .., 1, 0, 1, ..
    last = size - 1
    # a tensor max keeps the size symbolic (a Python max would guard on it while exporting)
    period = torch.clamp(torch.full((), 2 * last, dtype=torch.long, device=device), min=1)
    phase = torch.remainder(torch.arange(target, device=device), period)
    return last - torch.abs(phase - last)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad [..., H, W] at the bottom/right up to the next multiple of ``multiple``."""
    height, width = x.shape[-2:]
    return reflect_pad_to(x, height + (-height) % multiple, width + (-width) % multiple)
