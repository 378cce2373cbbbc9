"""UNetFormer (Wang et al., "UNetFormer: A UNet-like transformer for efficient semantic
segmentation of remote sensing urban scene imagery", ISPRS JPRS 190, 2022) and its factory.

Beyond the paper, the pixel classifier reads a signed embedding: FRH + head feature (ReLU6, so
non-negative: its class means could never form a simplex ETF) -> bias-free 1x1 ``projection`` ->
Dropout2d -> 1x1 classifier. The projection is part of the inference model, and the embedding it
produces is the one tensor the neural-collapse regularizers act on and the collapse diagnostics
measure (DESIGN.md, Contracts). With ``embed_dim == decode_channels`` and an identity projection
the model is the paper's UNetFormer exactly.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from rsseg.config import ModelConfig
from rsseg.errors import ConfigError
from rsseg.models.decoder import AuxHead, Decoder, SegmentationHead, upsample
from rsseg.models.encoder import create_encoder
from rsseg.models.layers import pad_to_multiple

#: inputs are padded to a multiple of the encoder's output stride
OUTPUT_STRIDE = 32


class UNetFormer(nn.Module):
    """UNetFormer: timm CNN encoder + global-local transformer decoder + FRH.

    ``forward(x)`` with x [B, in_channels, H, W] (any H, W; reflect-padded to a multiple of 32
    inside and cropped back):

    * eval mode: logits [B, K, H, W];
    * training mode: dict with ``"logits"`` [B, K, H, W], ``"aux"`` [B, K, H, W] (only when built
      with an aux head) and ``"embedding"`` [B, embed_dim, ceil(H/4), ceil(W/4)].

    Contract: the embedding is the pixel classifier's input. ``classify(embedding)`` gives the
    stride-4 logits, and in eval mode ``logits == upsample(classify(embedding))`` cropped to the
    input, exactly so for input sides that are multiples of 32 (otherwise the embedding returned is
    cropped to ``ceil(H/4) x ceil(W/4)`` from the padded one). In training the classifier reads the
    embedding through Dropout2d.
    """

    embedding_stride = 4

    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int,
        in_channels: int,
        decode_channels: int = 64,
        num_heads: int = 8,
        window_size: int = 8,
        dropout: float = 0.1,
        embed_dim: int = 64,
        aux_head: bool = True,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.embed_dim = embed_dim
        self.encoder = encoder
        channels = tuple(encoder.feature_info.channels())
        self.decoder = Decoder(channels, decode_channels, num_heads, window_size)  # type: ignore[arg-type]
        self.head = SegmentationHead(decode_channels, num_classes, dropout, in_classifier=embed_dim)
        #: signed embedding = projection(ReLU6 feature); read by the classifier at inference too
        self.projection = nn.Conv2d(decode_channels, embed_dim, 1, bias=False)
        self.aux_head = AuxHead(decode_channels, num_classes, dropout) if aux_head else None

    @property
    def classifier_weight(self) -> torch.Tensor:
        """Pixel classifier weights ``[K, embed_dim]`` (for NC2/NC3 diagnostics)."""
        return self.head.classifier.weight[:, :, 0, 0]

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        """Stride-4 logits ``[B, K, h, w]`` of an embedding ``[B, embed_dim, h, w]``."""
        return self.head.classifier(self.head.dropout(embedding))

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        if not self.training:
            return self._run(x, aux=False)["logits"]
        return self._run(x, aux=self.aux_head is not None)

    def forward_with_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [B, K, H, W], embedding [B, embed_dim, ceil(H/4), ceil(W/4)]) in any mode."""
        out = self._run(x, aux=False)
        return out["logits"], out["embedding"]

    def _run(self, x: torch.Tensor, aux: bool) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"model input has shape {tuple(x.shape)}; expected [batch, {self.in_channels}, height, width] "
                f"(the model was built for {self.in_channels} bands)"
            )
        height, width = x.shape[-2:]
        padded = pad_to_multiple(x, OUTPUT_STRIDE)
        full = padded.shape[-2:]
        stride4, (d4, d3, d2) = self.decoder(*self.encoder(padded))
        embedding = self.projection(self.head.feature(stride4))
        logits = upsample(self.classify(embedding), full)[:, :, :height, :width]
        s = self.embedding_stride
        out = {"logits": logits, "embedding": embedding[:, :, : -(-height // s), : -(-width // s)]}
        if aux:
            stride8 = d2.shape[-2:]
            logits8 = self.aux_head(upsample(d4, stride8) + upsample(d3, stride8) + d2)
            out["aux"] = upsample(logits8, full)[:, :, :height, :width]
        return out

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Encoder parameters (the reference trains them at a 10x lower learning rate)."""
        return self.encoder.parameters()

    def decoder_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter outside the encoder: decoder, projection and heads."""
        encoder = {id(p) for p in self.encoder.parameters()}
        return (p for p in self.parameters() if id(p) not in encoder)


def build_model(cfg: ModelConfig, num_classes: int, in_channels: int) -> UNetFormer:
    """Build the model described by ``cfg`` for ``num_classes`` classes and ``in_channels`` bands.

    Encoder weights: ``cfg.weights`` (a local file or a name, :mod:`rsseg.models.weights`) if set,
    else timm's ImageNet weights when ``cfg.pretrained``, else random initialisation.
    """
    if cfg.name.lower() != "unetformer":
        raise ConfigError(f"unknown model.name {cfg.name!r}; the only model is 'unetformer'")
    if num_classes < 1 or in_channels < 1:
        raise ConfigError(f"need at least one class and one band (got {num_classes} classes, {in_channels} bands)")
    if cfg.window_size < 2 or cfg.window_size % 2:
        raise ConfigError(f"model.window_size must be an even number >= 2 (got {cfg.window_size}); the paper uses 8")
    if cfg.decode_channels < 1 or cfg.num_heads < 1 or cfg.decode_channels % cfg.num_heads:
        raise ConfigError(
            f"model.decode_channels ({cfg.decode_channels}) must be a positive multiple of model.num_heads "
            f"({cfg.num_heads}); the paper uses 64 and 8"
        )
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1) (got {cfg.dropout})")
    if cfg.embed_dim < 1:
        raise ConfigError(f"model.embed_dim must be positive (got {cfg.embed_dim})")
    encoder = create_encoder(cfg.encoder, in_channels, pretrained=cfg.pretrained, weights=cfg.weights)
    return UNetFormer(
        encoder,
        num_classes=num_classes,
        in_channels=in_channels,
        decode_channels=cfg.decode_channels,
        num_heads=cfg.num_heads,
        window_size=cfg.window_size,
        dropout=cfg.dropout,
        embed_dim=cfg.embed_dim,
        aux_head=cfg.aux_head,
    )
