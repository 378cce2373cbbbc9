"""Global-local attention and the transformer block of the UNetFormer decoder.

Wang et al., "UNetFormer: A UNet-like transformer for efficient semantic segmentation of remote
sensing urban scene imagery", ISPRS JPRS 190 (2022), Sec. 3.2-3.3 (Figs. 3-4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rsseg.models.layers import ConvBN, SeparableConvBN, reflect_pad_to


def relative_position_index(window_size: int) -> torch.Tensor:
    """[N, N] index into a ((2w-1)^2, heads) bias table for the N = w*w tokens of one window."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij"))
    coords = coords.flatten(1)  # [2, N]
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)  # [N, N, 2] in [0, 2w-2]
    return rel[..., 0] * (2 * window_size - 1) + rel[..., 1]


class GlobalLocalAttention(nn.Module):
    """Global-local attention (GLA): [B, C, H, W] -> [B, C, H, W] for any H, W.

    Local branch: 3x3 ConvBN + 1x1 ConvBN (summed). Global branch: multi-head self-attention in
    non-overlapping ``window_size`` windows (scale head_dim^-0.5, learned relative position bias),
    then cross-shaped window context: average pooling with kernels (w, 1) and (1, w), summed.
    The sum of both branches goes through a separable w x w ConvBN projection. The map is
    reflect-padded to a multiple of the window inside and cropped back.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=False)
        self.local1 = ConvBN(dim, dim, 3)
        self.local2 = ConvBN(dim, dim, 1)
        self.proj = SeparableConvBN(dim, dim, window_size)
        # padding w/2 - 1 after a one-pixel reflect pad keeps the size for the even kernel w
        self.pool_x = nn.AvgPool2d((window_size, 1), stride=1, padding=(window_size // 2 - 1, 0))
        self.pool_y = nn.AvgPool2d((1, window_size), stride=1, padding=(0, window_size // 2 - 1))
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=False)

    def window_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Windowed multi-head self-attention: [B, C, Hp, Wp] (multiples of w) -> [B, C, Hp, Wp]."""
        batch, channels, height, width = x.shape
        ws, heads = self.window_size, self.num_heads
        head_dim = channels // heads
        rows, cols = height // ws, width // ws
        # qkv channels are ordered (qkv, head, head_dim); tokens of a window are (row, col) in it
        qkv = self.qkv(x).reshape(batch, 3, heads, head_dim, rows, ws, cols, ws)
        qkv = qkv.permute(1, 0, 4, 6, 2, 5, 7, 3).reshape(3, batch * rows * cols, heads, ws * ws, head_dim)
        q, k, v = qkv.unbind(0)
        bias = self.relative_position_bias_table[self.relative_position_index]  # [N, N, heads]
        bias = bias.permute(2, 0, 1).to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)  # [B*r*c, heads, N, d]
        out = out.reshape(batch, rows, cols, heads, ws, ws, head_dim).permute(0, 3, 6, 1, 4, 2, 5)
        return out.reshape(batch, channels, height, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        ws = self.window_size
        local = self.local2(x) + self.local1(x)
        padded = reflect_pad_to(x, height + (-height) % ws, width + (-width) % ws)
        attn = self.window_attention(padded)[:, :, :height, :width]
        context = self.pool_x(reflect_pad_to(attn, height + 1, width)) + self.pool_y(
            reflect_pad_to(attn, height, width + 1)
        )
        out = reflect_pad_to(context + local, height + 1, width + 1)
        return self.proj(out)[:, :, :height, :width]


class Mlp(nn.Sequential):
    """Pointwise MLP ``1x1 conv -> ReLU6 -> 1x1 conv`` (ratio 4, dropout 0 as in the reference)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(nn.Conv2d(dim, hidden, 1), nn.ReLU6(), nn.Conv2d(hidden, dim, 1))


class Block(nn.Module):
    """Pre-norm transformer block with BatchNorm: ``x + GLA(BN(x))``, then ``x + MLP(BN(x))``.

    [B, C, H, W] -> [B, C, H, W].
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = GlobalLocalAttention(dim, num_heads, window_size)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))
