"""Neural-collapse regularizer modules: ``forward(embedding, labels) -> {name: weighted term}``.

Each module acts on the model's training-only signed embedding ``[B, D, h, w]`` and the labels
``[B, H, W]`` (ignore value 255), runs in float32 with autocast off, and returns its loss terms
ALREADY multiplied by its weights, so the trainer adds the dict values to the segmentation loss.
A batch without a valid pixel returns zeros that still touch the embedding and every parameter
of the module, so DDP sees all parameters receive a gradient.

- :class:`In2NeCT` (Shen et al.): Eq. 7, ``w (L_inter + L_intra)``, w = 0.2.
- :class:`CeCo` (Zhong et al., CVPR 2023): Eq. 5, ``lambda L_CR``, lambda = 0.4.
- :class:`RegionRebalance` (Cui et al.): Eq. 9, ``lambda L_reg``, lambda = 0.3.
- :class:`NCFeature` (Liu et al.): Eq. 16, ``lambda_W L_W + lambda_B L_B``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rsseg.config import RegularizersConfig
from rsseg.errors import RsSegError
from rsseg.losses.centers import (
    flatten_embedding,
    all_reduce_sums,
    flat_class_index,
    image_class_means,
    labels_to_embedding,
    means_from_sums,
    scatter_class_sums,
    upsampled_class_sums,
)
from rsseg.losses.collapse import (
    present_mean,
    between_class_loss,
    center_collapse_loss,
    inter_class_loss,
    intra_class_loss,
    within_class_loss,
)
from rsseg.losses.etf import simplex_etf


def log_prior_from_counts(counts: Tensor | list[float]) -> Tensor:
    """Log class frequencies ``log((F(k) + 1) / sum_j (F(j) + 1))`` for a balanced softmax.

    ``counts [K]`` are e.g. RR's region frequencies F(k) (number of training images holding class
    k, RR Eq. 7). The +1 (Laplace smoothing) keeps a class never seen in training finite.
    """
    c = torch.as_tensor(counts, dtype=torch.float64).clamp_min(0) + 1.0
    return torch.log(c / c.sum()).float()


def sample_per_class(index: Tensor, num_classes: int, per_class: int) -> Tensor:
    """Positions of at most ``per_class`` pixels of each class, uniform without replacement.

    ``index [N]`` holds class indices with ``num_classes`` for ignored pixels (never sampled).
    One sort by (class, random key) replaces a loop over classes: a pixel is kept when its rank
    within its class is below ``per_class``.
    """
    keys = index.to(torch.float64) + torch.rand(index.shape, device=index.device, dtype=torch.float64)
    order = torch.argsort(keys)
    sorted_class = index[order]
    counts = torch.bincount(index, minlength=num_classes + 1)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(index.numel(), device=index.device) - starts[sorted_class]
    return order[(rank < per_class) & (sorted_class < num_classes)]


def _check_prior(log_prior: Tensor | None, num_classes: int, what: str) -> Tensor | None:
    if log_prior is None:
        return None
    prior = torch.as_tensor(log_prior, dtype=torch.float32).reshape(-1)
    if prior.numel() != num_classes or not bool(torch.isfinite(prior).all()):
        raise RsSegError(
            f"{what} log prior must hold {num_classes} finite values (one per class), got "
            f"{prior.tolist()}: build it with rsseg.losses.log_prior_from_counts(region_counts)"
        )
    return prior


class _Regularizer(nn.Module):
    """Shared plumbing: autocast off, float32, zero result for a batch without valid pixels."""

    def __init__(self, num_classes: int, weight: float, ignore_index: int, sync_centers: bool) -> None:
        super().__init__()
        if num_classes < 2:
            raise RsSegError(f"neural-collapse regularizers need at least 2 classes, got {num_classes}")
        self.num_classes = num_classes
        self.weight = float(weight)
        self.ignore_index = ignore_index
        self.sync_centers = sync_centers

    def forward(self, embedding: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """``embedding [B, D, h, w]``, ``labels [B, H, W]`` -> weighted loss terms (scalars)."""
        if embedding.ndim != 4 or labels.ndim != 3 or embedding.shape[0] != labels.shape[0]:
            raise RsSegError(
                f"regularizer inputs must be embedding [B, D, h, w] and labels [B, H, W], got "
                f"{tuple(embedding.shape)} and {tuple(labels.shape)}"
            )
        with torch.autocast(device_type=embedding.device.type, enabled=False):
            return self.terms(embedding, labels)

    def terms(self, embedding: Tensor, labels: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def zero(self, embedding: Tensor, names: list[str]) -> dict[str, Tensor]:
        """Zero terms wired to the embedding and every trainable parameter (DDP-safe)."""
        zero = embedding.sum().float() * 0.0
        for p in self.parameters():
            if p.requires_grad:
                zero = zero + p.sum() * 0.0
        return {name: zero for name in names}

    def gather(self, embedding: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """``z [N, D]`` and the class index ``[N]`` (ignored = K) at the embedding grid."""
        labels = labels_to_embedding(labels, tuple(embedding.shape[-2:]))
        return flatten_embedding(embedding), flat_class_index(labels, self.num_classes, self.ignore_index)

    def centers(self, z: Tensor, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(means, counts used for the means, local counts)``; global when ``sync_centers``."""
        sums, local = scatter_class_sums(z, index, self.num_classes)
        counts = local
        if self.sync_centers:
            sums, counts = all_reduce_sums(sums, local)
        return means_from_sums(sums, counts), counts, local


class In2NeCT(_Regularizer):
    """In2NeCT (Shen et al.): fixed simplex-ETF classifier on class means + balanced L_intra.

    Returns ``{"in2nect_inter": w * inter_weight * L_inter, "in2nect_intra": w * intra_weight *
    L_intra}`` (Eq. 7, w = 0.2); a term whose weight is 0 is not computed and not returned.
    L_inter uses all valid pixels (means, optionally reduced over DDP ranks); L_intra samples at
    most ``pixels_per_class`` valid pixels per class per batch, so its memory is O((K M)^2)
    instead of O(pixels^2). The ETF ``[K, embed_dim]`` is a persistent buffer: saved in the
    checkpoint, never optimised, never weight-decayed.
    """

    def __init__(
        self,
        num_classes: int,
        embed_dim: int,
        inter_weight: float = 1.0,
        intra_weight: float = 1.0,
        scale: float = 5.0,
        temperature: float = 0.1,
        pixels_per_class: int = 512,
        weight: float = 0.2,
        ignore_index: int = 255,
        sync_centers: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(num_classes, weight, ignore_index, sync_centers)
        if pixels_per_class < 2:
            raise RsSegError(f"in2nect.pixels_per_class must be >= 2 (pairs are needed), got {pixels_per_class}")
        if temperature <= 0:
            raise RsSegError(f"in2nect.temperature must be positive, got {temperature}")
        self.register_buffer("etf", simplex_etf(num_classes, embed_dim, generator), persistent=True)
        self.inter_weight = float(inter_weight)
        self.intra_weight = float(intra_weight)
        self.scale = float(scale)
        self.temperature = float(temperature)
        self.pixels_per_class = int(pixels_per_class)

    def terms(self, embedding: Tensor, labels: Tensor) -> dict[str, Tensor]:
        names = [n for n, w in (("in2nect_inter", self.inter_weight), ("in2nect_intra", self.intra_weight)) if w]
        z, index = self.gather(embedding, labels)
        if not bool((index < self.num_classes).any()):
            return self.zero(embedding, names)
        out: dict[str, Tensor] = {}
        if self.inter_weight:
            means, counts, _ = self.centers(z, index)
            inter = inter_class_loss(means, counts, self.etf, self.scale)
            out["in2nect_inter"] = self.weight * self.inter_weight * inter
        if self.intra_weight:
            pick = sample_per_class(index, self.num_classes, self.pixels_per_class)
            intra = intra_class_loss(F.normalize(z[pick], dim=1), index[pick], self.temperature)
            out["in2nect_intra"] = self.weight * self.intra_weight * intra
        return out


class CeCo(_Regularizer):
    """Center Collapse regularizer (Zhong et al., CVPR 2023), as in the authors' release.

    Embedding -> 1x1 conv + BN projection to ``proj_dim`` -> bilinear upsampling to label
    resolution (CeCo's choice; computed exactly without materialising it, see
    :func:`~rsseg.losses.centers.upsampled_class_sums`) -> class centers of the batch ->
    Linear + ReLU -> L2 normalisation -> classifier scaled by alpha = ``scale`` -> CE (Eq. 4),
    optionally with ``log_prior`` added to the logits (balanced softmax on image-level class
    frequencies, as the released code does). Returns ``{"ceco": weight * L_CR}`` (Eq. 5).

    ``freeze_projection`` selects the center classifier of the paper's Table 1: True (default,
    the paper's method and best row "PC learned / CC fixed") keeps the center classifier fixed as
    the simplex ETF (a buffer); False makes it a learnable ``[K, proj_dim]`` parameter initialised
    at the ETF (row "PC learned / CC learned", which the paper shows is worse). The pixel
    classifier (PC) is the segmentation model's and is always learned here.
    """

    def __init__(
        self,
        num_classes: int,
        in_dim: int,
        proj_dim: int = 128,
        scale: float = 5.0,
        log_prior: Tensor | None = None,
        freeze_projection: bool = True,
        weight: float = 0.4,
        ignore_index: int = 255,
        sync_centers: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(num_classes, weight, ignore_index, sync_centers)
        self.project = nn.Sequential(nn.Conv2d(in_dim, proj_dim, 1, bias=False), nn.BatchNorm2d(proj_dim))
        self.head = nn.Sequential(nn.Linear(proj_dim, proj_dim), nn.ReLU())
        etf = simplex_etf(num_classes, proj_dim, generator)
        self.register_buffer("etf", etf, persistent=True)
        self.classifier = None if freeze_projection else nn.Parameter(etf.clone())
        self.register_buffer("log_prior", _check_prior(log_prior, num_classes, "CeCo"), persistent=True)
        self.scale = float(scale)

    def terms(self, embedding: Tensor, labels: Tensor) -> dict[str, Tensor]:
        feats = self.project(embedding.float())
        sums, counts = upsampled_class_sums(feats, labels, self.num_classes, self.ignore_index)
        if not bool((counts > 0).any()):
            return self.zero(embedding, ["ceco"])
        if self.sync_centers:
            sums, counts = all_reduce_sums(sums, counts)
        centers = self.head(means_from_sums(sums, counts))
        classifier = self.etf if self.classifier is None else self.classifier
        loss = center_collapse_loss(centers, counts, classifier, self.scale, self.log_prior)
        return {"ceco": self.weight * loss}


class RegionRebalance(_Regularizer):
    """Region Rebalance (Cui et al.): balanced-softmax classifier on per-image class means.

    Region features ``r`` are the mean embedding of each class present in each image (Sec. 3.3);
    a trainable linear region classifier gives logits, and ``L_reg`` (Eq. 8) is the cross-entropy
    of ``logits + log F`` averaged over regions, with ``F`` the region (image-level) class
    frequencies (Eq. 7) passed as ``log_prior [K]``; ``None`` means a uniform prior (plain CE).
    Returns ``{"rr": weight * L_reg}`` (Eq. 9, lambda = 0.3). Regions are per image, so nothing
    is reduced across DDP ranks.
    """

    def __init__(
        self,
        num_classes: int,
        in_dim: int,
        log_prior: Tensor | None = None,
        weight: float = 0.3,
        ignore_index: int = 255,
    ) -> None:
        super().__init__(num_classes, weight, ignore_index, sync_centers=False)
        self.classifier = nn.Linear(in_dim, num_classes)
        prior = _check_prior(log_prior, num_classes, "RegionRebalance")
        self.register_buffer("log_prior", torch.zeros(num_classes) if prior is None else prior, persistent=True)

    def terms(self, embedding: Tensor, labels: Tensor) -> dict[str, Tensor]:
        regions, counts = image_class_means(embedding, labels, self.num_classes, self.ignore_index)
        if not bool((counts > 0).any()):
            return self.zero(embedding, ["rr"])
        logits = self.classifier(regions) + self.log_prior
        target = torch.arange(regions.shape[0], device=regions.device) % self.num_classes
        ce = F.cross_entropy(logits, target, reduction="none")
        return {"rr": self.weight * present_mean(ce, counts > 0)}


class NCFeature(_Regularizer):
    """L_W + L_B feature terms (Liu et al., Eq. 16) on the embedding.

    Returns ``{"nc_within": weight * lambda_w * L_W, "nc_between": weight * lambda_b * L_B}``.
    With ``sync_centers`` the class means are global; L_W's per-class averages use the local
    pixels (each rank's share of the global L_W is averaged by DDP).
    """

    def __init__(
        self,
        num_classes: int,
        lambda_w: float = 0.01,
        lambda_b: float = 0.1,
        weight: float = 1.0,
        ignore_index: int = 255,
        sync_centers: bool = False,
    ) -> None:
        super().__init__(num_classes, weight, ignore_index, sync_centers)
        self.lambda_w = float(lambda_w)
        self.lambda_b = float(lambda_b)

    def terms(self, embedding: Tensor, labels: Tensor) -> dict[str, Tensor]:
        z, index = self.gather(embedding, labels)
        if not bool((index < self.num_classes).any()):
            return self.zero(embedding, ["nc_within", "nc_between"])
        means, counts, local = self.centers(z, index)
        # index already marks ignored pixels with K, so K plays the ignore value here
        within = within_class_loss(z, index, means, local, ignore_index=self.num_classes)
        between = between_class_loss(means, counts)
        return {
            "nc_within": self.weight * self.lambda_w * within,
            "nc_between": self.weight * self.lambda_b * between,
        }


def build_regularizers(
    cfg: RegularizersConfig,
    num_classes: int,
    embed_dim: int,
    log_region_prior: Tensor | None = None,
    ignore_index: int = 255,
) -> nn.ModuleDict:
    """Build the enabled regularizers (``"in2nect"``, ``"ceco"``, ``"rr"``, ``"nc"``) from config.

    ``log_region_prior [K]``: log image-level class frequencies (see :func:`log_prior_from_counts`),
    used by CeCo when ``cfg.ceco.use_prior`` and by RR; RR falls back to a uniform prior (plain
    cross-entropy on regions) when it is None.
    """
    out = nn.ModuleDict()
    sync = cfg.sync_centers
    if cfg.in2nect.enabled:
        c = cfg.in2nect
        out["in2nect"] = In2NeCT(
            num_classes, embed_dim, inter_weight=c.inter_weight, intra_weight=c.intra_weight, scale=c.scale,
            temperature=c.temperature, pixels_per_class=c.pixels_per_class, weight=c.weight,
            ignore_index=ignore_index, sync_centers=sync,
        )
    if cfg.ceco.enabled:
        c = cfg.ceco
        out["ceco"] = CeCo(
            num_classes, embed_dim, proj_dim=c.proj_dim, scale=c.scale,
            log_prior=log_region_prior if c.use_prior else None, freeze_projection=c.freeze_projection,
            weight=c.weight, ignore_index=ignore_index, sync_centers=sync,
        )
    if cfg.rr.enabled:
        out["rr"] = RegionRebalance(
            num_classes, embed_dim, log_prior=log_region_prior, weight=cfg.rr.weight, ignore_index=ignore_index
        )
    if cfg.nc.enabled:
        c = cfg.nc
        out["nc"] = NCFeature(
            num_classes, lambda_w=c.lambda_w, lambda_b=c.lambda_b, weight=c.weight,
            ignore_index=ignore_index, sync_centers=sync,
        )
    return out
