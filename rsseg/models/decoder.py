"""UNetFormer decoder: weighted skip fusion, feature refinement head, segmentation/aux heads.

Wang et al., ISPRS JPRS 190 (2022), Sec. 3.4-3.5 (Figs. 2 and 5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rsseg.models.attention import Block
from rsseg.models.layers import ConvBN, ConvBNReLU, SeparableConvBN


def upsample(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize (align_corners=False) of [B, C, h, w] to [B, C, *size]."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class WeightedFusion(nn.Module):
    """Weighted sum of the x2-upsampled decoder map and a projected encoder skip.

    ``w = ReLU(weights) / (sum(ReLU(weights)) + eps)``, ``out = post(w0 * pre(skip) + w1 * up(x))``
    with two learnable scalars (init 1) and ``eps = 1e-8``.
    x: [B, C, h, w], skip: [B, C_skip, 2h, 2w] -> [B, C, 2h, 2w].
    """

    def __init__(self, skip_channels: int, channels: int, eps: float = 1e-8) -> None:
        super().__init__()
        # a plain 1x1 conv, as in the reference implementation (the post-conv has the BatchNorm)
        self.pre_conv = nn.Conv2d(skip_channels, channels, 1, bias=False)
        self.weights = nn.Parameter(torch.ones(2))
        self.eps = eps
        self.post_conv = ConvBNReLU(channels, channels, 3)

    def fuse(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        weights = F.relu(self.weights)
        weights = weights / (weights.sum() + self.eps)
        return weights[0] * self.pre_conv(skip) + weights[1] * upsample(x, skip.shape[-2:])

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.post_conv(self.fuse(x, skip))


class FeatureRefinementHead(WeightedFusion):
    """Feature refinement head (FRH) at stride 4: weighted fusion, then spatial + channel attention.

    Spatial path: depthwise 3x3 conv + sigmoid gate; channel path: GAP -> 1x1 (C -> C/16) -> ReLU6
    -> 1x1 (C/16 -> C) -> sigmoid gate. Their sum goes through a separable 3x3 ConvBN, plus a 1x1
    ConvBN shortcut, then ReLU6. x: [B, C, h, w], skip: [B, C_skip, 2h, 2w] -> [B, C, 2h, 2w].
    """

    def __init__(self, skip_channels: int, channels: int) -> None:
        super().__init__(skip_channels, channels)
        self.spatial = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, groups=channels), nn.Sigmoid())
        reduced = max(channels // 16, 1)
        self.channel = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, reduced, 1, bias=False),
            nn.ReLU6(),
            nn.Conv2d(reduced, channels, 1, bias=False),
            nn.Sigmoid(),
        )
        self.shortcut = ConvBN(channels, channels, 1)
        self.proj = SeparableConvBN(channels, channels, 3)
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.post_conv(self.fuse(x, skip))
        attended = self.spatial(x) * x + self.channel(x) * x
        return self.act(self.proj(attended) + self.shortcut(x))


class SegmentationHead(nn.Module):
    """3x3 ConvBNReLU6 feature, then (in :class:`~rsseg.models.unetformer.UNetFormer`) the signed
    projection, Dropout2d and the 1x1 pixel classifier (no bias).

    ``feature``: [B, C, h, w] -> [B, C, h, w] (non-negative, ReLU6); ``classifier``: [B, E, h, w]
    -> [B, K, h, w] with ``E = in_classifier``. The dropout is not in-place, so the embedding it
    reads (the tensor the regularizers act on) is never overwritten.
    """

    def __init__(self, channels: int, num_classes: int, dropout: float, in_classifier: int | None = None) -> None:
        super().__init__()
        self.feature = ConvBNReLU(channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout, inplace=False)
        self.classifier = nn.Conv2d(in_classifier or channels, num_classes, 1, bias=False)


class AuxHead(nn.Sequential):
    """Training-only auxiliary head: 3x3 ConvBNReLU6 -> Dropout -> 1x1 conv: [B, C, h, w] -> [B, K, h, w]."""

    def __init__(self, channels: int, num_classes: int, dropout: float) -> None:
        super().__init__(
            ConvBNReLU(channels, channels, 3),
            nn.Dropout(dropout),
            nn.Conv2d(channels, num_classes, 1, bias=False),
        )


class Decoder(nn.Module):
    """Stride-32 -> stride-4 decoder over the four encoder features.

    ``forward(res1, res2, res3, res4)`` with res_i [B, C_i, H/2^(i+1), W/2^(i+1)] returns the
    stride-4 map [B, D, H/4, W/4] and the three block outputs (strides 32, 16, 8) the aux head uses.
    """

    def __init__(
        self,
        encoder_channels: tuple[int, int, int, int],
        channels: int,
        num_heads: int,
        window_size: int,
    ) -> None:
        super().__init__()
        c1, c2, c3, c4 = encoder_channels
        self.pre_conv = ConvBN(c4, channels, 1)
        self.b4 = Block(channels, num_heads, window_size)
        self.p3 = WeightedFusion(c3, channels)
        self.b3 = Block(channels, num_heads, window_size)
        self.p2 = WeightedFusion(c2, channels)
        self.b2 = Block(channels, num_heads, window_size)
        self.p1 = FeatureRefinementHead(c1, channels)

    def forward(
        self, res1: torch.Tensor, res2: torch.Tensor, res3: torch.Tensor, res4: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        d4 = self.b4(self.pre_conv(res4))
        d3 = self.b3(self.p3(d4, res3))
        d2 = self.b2(self.p2(d3, res2))
        return self.p1(d2, res1), (d4, d3, d2)
