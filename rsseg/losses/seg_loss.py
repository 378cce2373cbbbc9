"""Pixel-wise segmentation loss, as in the UNetFormer reference (Wang et al., ISPRS JPRS 2022).

``SoftCE(label smoothing 0.05) + Dice`` on the main logits plus ``0.4 x SoftCE`` on the auxiliary
head's logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rsseg.constants import IGNORE_INDEX
from rsseg.errors import ConfigError
from rsseg.losses.centers import flat_class_index


def soft_dice_loss(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX, smooth: float = 0.05) -> Tensor:
    """Multiclass soft Dice on softmax probabilities, ignore pixels excluded.

    ``logits [B, K, H, W]``, ``labels [B, H, W]``. Per class
    ``dice_k = (2 sum p_k g_k + smooth) / (sum p_k + sum g_k + smooth)`` over valid pixels;
    the loss is ``1 - dice_k`` averaged over the classes present in the labels of the batch
    (a class absent from the labels has no overlap to reward; the reference implementation
    zeroes those terms too but still divides by K, which only rescales the loss).
    """
    return _dice_on_index(logits, flat_class_index(labels, logits.shape[1], ignore_index), smooth)


def _dice_on_index(logits: Tensor, index: Tensor, smooth: float) -> Tensor:
    """:func:`soft_dice_loss` on a flat class index (ignored pixels = K)."""
    k = logits.shape[1]
    valid = (index < k).to(logits.dtype)
    probs = torch.softmax(logits.float(), dim=1).permute(0, 2, 3, 1).reshape(-1, k) * valid.unsqueeze(1)
    onehot = F.one_hot(index, k + 1)[:, :k].to(probs.dtype)
    inter = (probs * onehot).sum(0)
    denom = probs.sum(0) + onehot.sum(0)
    dice = (2.0 * inter + smooth) / (denom + smooth).clamp_min(1e-7)
    present = (onehot.sum(0) > 0).to(probs.dtype)
    return ((1.0 - dice) * present).sum() / present.sum().clamp_min(1.0)


def median_frequency_weights(pixel_freq: list[float] | Tensor) -> Tensor:
    """Median frequency balancing (Eigen and Fergus, ICCV 2015): ``w_k = median(f) / f_k``.

    ``pixel_freq [K]``: training pixel frequencies. A class never seen in training (f = 0) gets
    the largest weight of the seen classes instead of infinity.
    """
    f = torch.as_tensor(pixel_freq, dtype=torch.float64).reshape(-1)
    seen = f > 0
    if not bool(seen.any()):
        raise ConfigError("class weights need training pixel frequencies with at least one class present")
    w = torch.zeros_like(f)
    w[seen] = f[seen].median() / f[seen]
    w[~seen] = w[seen].max()
    return w.float()


class SegmentationLoss(nn.Module):
    """``forward(logits, labels, aux_logits=None) -> {"ce", "dice", "aux"}``, weighted terms.

    Args:
        mode: ``"ce_dice"`` (the UNetFormer reference) or ``"ce"``.
        label_smoothing: of the soft cross-entropy (0.05 in the reference).
        aux_weight: weight of the auxiliary head's cross-entropy (0.4 in the reference).
        class_weights: ``[K]`` per-class weights of the cross-entropy terms (e.g.
            :func:`median_frequency_weights`); ``None`` weighs every pixel alike.

    ``logits`` / ``aux_logits`` ``[B, K, h, w]`` at another resolution than ``labels [B, H, W]``
    are bilinearly upsampled to it. The terms are summed by the caller.
    """

    def __init__(
        self,
        num_classes: int,
        mode: str = "ce_dice",
        label_smoothing: float = 0.05,
        aux_weight: float = 0.4,
        ignore_index: int = IGNORE_INDEX,
        class_weights: Tensor | None = None,
    ) -> None:
        super().__init__()
        if mode not in ("ce", "ce_dice"):
            raise ConfigError(f"segmentation loss mode must be 'ce' or 'ce_dice', got {mode!r}")
        if class_weights is not None:
            class_weights = torch.as_tensor(class_weights, dtype=torch.float32).reshape(-1)
            if class_weights.numel() != num_classes or not bool((class_weights > 0).all()):
                raise ConfigError(f"class weights must be {num_classes} positive values, got {class_weights.tolist()}")
        # a buffer: moves with the module to the training device; not saved (derived from the data)
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.num_classes = num_classes
        self.mode = mode
        self.label_smoothing = float(label_smoothing)
        self.aux_weight = float(aux_weight)
        self.ignore_index = ignore_index

    def _at_labels(self, logits: Tensor, labels: Tensor) -> Tensor:
        if logits.ndim != 4 or logits.shape[1] != self.num_classes or labels.ndim != 3:
            raise ValueError(
                f"expected logits [B, {self.num_classes}, H, W] and labels [B, H, W], got "
                f"{tuple(logits.shape)} and {tuple(labels.shape)}"
            )
        if logits.shape[-2:] != labels.shape[-2:]:
            logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        return logits.float()

    def _ce(self, logits: Tensor, labels: Tensor) -> Tensor:
        if not bool((labels != self.ignore_index).any()):
            # F.cross_entropy returns NaN (0/0) when every pixel is ignored
            return logits.sum() * 0.0
        return F.cross_entropy(
            logits, labels.long(), weight=self.class_weights, ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
        )

    def forward(self, logits: Tensor, labels: Tensor, aux_logits: Tensor | None = None) -> dict[str, Tensor]:
        logits = self._at_labels(logits, labels)
        index = flat_class_index(labels, self.num_classes, self.ignore_index)  # clear error on a bad encoding
        out = {"ce": self._ce(logits, labels)}
        if self.mode == "ce_dice":
            out["dice"] = _dice_on_index(logits, index, smooth=0.05)
        if aux_logits is not None and self.aux_weight:
            out["aux"] = self.aux_weight * self._ce(self._at_labels(aux_logits, labels), labels)
        return out
