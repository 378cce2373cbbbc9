"""Neural-collapse regularizer modules: ``forward(embedding, labels) -> {name: weighted term}``.

Each module acts on the model's embedding ``[B, D, h, w]`` (the pixel classifier's input) and the labels
``[B, H, W]`` (ignore value 255), runs in float32 with autocast off, and returns its loss terms
ALREADY multiplied by its weights, so the trainer adds the dict values to the segmentation loss.
A batch without a valid pixel returns zeros that still touch the embedding and every parameter
of the module, so DDP sees all parameters receive a gradient.

- :class:`In2NeCT` (Shen et al.): Eq. 7, ``w (L_inter + L_intra)``, w = 0.2.
- :class:`CeCo` (Zhong et al., CVPR 2023): Eq. 5, ``lambda L_CR``, lambda = 0.5 (2D images).
- :class:`RegionRebalance` (Cui et al.): Eq. 9, ``lambda L_reg``, lambda = 0.3.
- :class:`NCFeature` (Liu et al.): Eq. 16, ``lambda_W L_W + lambda_B L_B``.

A regularizer is one class plus its config section (a dataclass declared just above it, the one
home of its defaults: the constructor's defaults read them), registered under its name with
:func:`register_regularizer`; the name is its key under ``loss.regularizers``. It is built from
its section by ``from_config``; :func:`build_regularizers` builds every enabled one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rsseg.config import RegularizersConfig, check_choice
from rsseg.constants import IGNORE_INDEX
from rsseg.errors import ConfigError
from rsseg.losses.centers import (
    all_reduce_sums,
    conv_bn_class_sums,
    flat_class_index,
    flatten_embedding,
    image_class_means,
    labels_to_embedding,
    means_from_sums,
    scatter_class_sums,
    upsample_class_weights,
    weighted_class_sums,
)
from rsseg.losses.collapse_terms import (
    between_class_loss,
    center_collapse_loss,
    inter_class_loss,
    intra_class_loss,
    present_mean,
    within_class_loss,
)
from rsseg.losses.etf import simplex_etf
from rsseg.registry import Registry


def sample_per_class(
    index: Tensor, num_classes: int, per_class: int, generator: torch.Generator | None = None
) -> Tensor:
    """Positions of at most ``per_class`` pixels of each class, uniform without replacement.

    ``index [N]`` holds class indices with ``num_classes`` for ignored pixels (never sampled).
    One sort by (class, random key) replaces a loop over classes: a pixel is kept when its rank
    within its class is below ``per_class``. ``generator``: a CPU generator for the random keys
    (drawn on the CPU and moved, so paired runs sample the same pixels on any device).
    """
    noise = torch.rand(index.shape, generator=generator, dtype=torch.float64).to(index.device)
    keys = index.to(torch.float64) + noise
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
        raise ConfigError(
            f"{what} log prior must hold {num_classes} finite values (one per class), got "
            f"{prior.tolist()}: build it with rsseg.data.stats.log_prior_from_counts(region_counts)"
        )
    return prior


class BuildContext:
    """What building a regularizer may need besides its config section."""

    def __init__(
        self,
        num_classes: int,
        embed_dim: int,
        ignore_index: int = IGNORE_INDEX,
        sync_centers: bool = True,
        log_region_prior: Tensor | None = None,
        seed: int = 0,
    ) -> None:
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.ignore_index = ignore_index
        self.sync_centers = sync_centers
        self.log_region_prior = log_region_prior
        self.seed = seed

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU generator seeded from the run's seed (own stream per use, not the global RNG)."""
        return torch.Generator().manual_seed(self.seed + offset)


#: name -> regularizer class (the name is its section's key under ``loss.regularizers``)
REGULARIZERS: Registry[type[_Regularizer]] = Registry("regularizer")


def register_regularizer(name: str) -> Callable[[type], type]:
    """Class decorator: register a regularizer (with its ``Section``) under the key ``name``."""

    def deco(cls: type) -> type:
        REGULARIZERS.add(name, cls)
        cls.name = name
        return cls

    return deco


def regularizer_names() -> tuple[str, ...]:
    """The registered regularizers (``-r`` choices, ``loss.regularizers`` keys)."""
    return REGULARIZERS.names()


def regularizers_config(**sections: Any) -> RegularizersConfig:
    """A ``loss.regularizers`` section holding every registered regularizer's section (defaults,
    or the given ones), as a parsed config has them."""
    extra = {name: sections.pop(name, None) or cls.Section() for name, cls in REGULARIZERS.items()}
    if sections:
        raise ConfigError(f"unknown regularizer(s) {sorted(sections)}; choose from {', '.join(regularizer_names())}")
    return RegularizersConfig(extra=extra)


def needs_region_prior(cfg: RegularizersConfig) -> bool:
    """Whether an enabled regularizer uses the training split's log region prior."""
    return any(REGULARIZERS.get(name).uses_region_prior(getattr(cfg, name)) for name in cfg.enabled())


#: the choices of ``reduction`` (In2NeCT) and of CeCo's classifiers
Reduction = Literal["sum", "mean"]
ClassifierKind = Literal["fixed", "learned"]


class _Regularizer(nn.Module):
    """Shared plumbing: autocast off, float32, zero result for a batch without valid pixels.

    Subclasses implement ``terms`` and ``from_config(section, ctx)`` where ``ctx`` is a
    :class:`BuildContext`; ``attach(model)`` may adapt the segmentation model (e.g. fix its pixel
    classifier); ``generator`` (a CPU ``torch.Generator``) drives any random pixel sampling.
    """

    name: str = ""
    #: its config section (a dataclass with ``enabled``, ``weight`` and its options)
    Section: ClassVar[type]

    def __init__(self, num_classes: int, weight: float, ignore_index: int, sync_centers: bool) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"neural-collapse regularizers need at least 2 classes, got {num_classes}")
        self.num_classes = num_classes
        self.weight = float(weight)
        self.ignore_index = ignore_index
        self.sync_centers = sync_centers
        self.generator: torch.Generator | None = None

    @classmethod
    def from_config(cls, section: Any, ctx: BuildContext) -> _Regularizer:
        raise NotImplementedError

    @classmethod
    def uses_region_prior(cls, section: Any) -> bool:
        """Whether ``from_config(section, ...)`` reads ``ctx.log_region_prior`` (default: no)."""
        return False

    def attach(self, model: nn.Module) -> None:
        """Adapt the segmentation model before training (default: nothing)."""

    def forward(self, embedding: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """``embedding [B, D, h, w]``, ``labels [B, H, W]`` -> weighted loss terms (scalars)."""
        if embedding.ndim != 4 or labels.ndim != 3 or embedding.shape[0] != labels.shape[0]:
            raise ValueError(
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


@dataclass
class In2NeCTConfig:
    """In2NeCT (Shen et al.) Eq. 7: ``L_seg + weight * (inter_weight L_inter + intra_weight L_intra)``.

    ``reduction="sum"`` sums the per-class terms over the classes as Eq. 5-6 do ("mean" averages
    them); ``temperature`` divides the cosines of Eq. 6 (1.0 = none, as written; SupCon uses 0.1).
    ``scale`` is the norm the class means are brought to in L_inter when ``normalize`` is on;
    ``centre`` subtracts the global pixel mean from the class means first (the NC2 centring; see
    :func:`rsseg.losses.collapse_terms.inter_class_loss`).
    """

    enabled: bool = False
    weight: float = 0.2
    inter_weight: float = 1.0
    intra_weight: float = 1.0
    scale: float = 5.0
    temperature: float = 1.0
    reduction: Reduction = "sum"
    pixels_per_class: int = 512
    normalize: bool = True
    centre: bool = False


@register_regularizer("in2nect")
class In2NeCT(_Regularizer):
    """In2NeCT (Shen et al.): fixed simplex-ETF classifier on class means + balanced L_intra.

    Returns ``{"in2nect_inter": w * inter_weight * L_inter, "in2nect_intra": w * intra_weight *
    L_intra}`` (Eq. 7, w = 0.2); a term whose weight is 0 is not computed and not returned.
    L_inter (Eq. 5, in the Eq. 10 softmax reading, see :func:`inter_class_loss`) uses all valid
    pixels (means global over DDP ranks with ``sync_centers``); L_intra (Eq. 6) samples at most
    ``pixels_per_class`` valid pixels per class per batch (memory O((K M)^2), not O(pixels^2)).
    Both sum over classes (``reduction="sum"``, as written; "mean" averages); ``temperature`` 1
    is Eq. 6 as written; ``normalize``/``scale`` and ``centre`` are L_inter's departures and
    options (:func:`inter_class_loss`). The ETF ``[K, embed_dim]`` is a persistent buffer: saved in the
    checkpoint, never optimised, never weight-decayed.
    """

    Section = In2NeCTConfig

    def __init__(
        self,
        num_classes: int,
        embed_dim: int,
        inter_weight: float = In2NeCTConfig.inter_weight,
        intra_weight: float = In2NeCTConfig.intra_weight,
        scale: float = In2NeCTConfig.scale,
        temperature: float = In2NeCTConfig.temperature,
        reduction: Reduction = In2NeCTConfig.reduction,
        pixels_per_class: int = In2NeCTConfig.pixels_per_class,
        normalize: bool = In2NeCTConfig.normalize,
        centre: bool = In2NeCTConfig.centre,
        weight: float = In2NeCTConfig.weight,
        ignore_index: int = IGNORE_INDEX,
        sync_centers: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(num_classes, weight, ignore_index, sync_centers)
        if pixels_per_class < 2:
            raise ConfigError(f"in2nect.pixels_per_class must be >= 2 (pairs are needed), got {pixels_per_class}")
        if temperature <= 0:
            raise ConfigError(f"in2nect.temperature must be positive, got {temperature}")
        self.register_buffer("etf", simplex_etf(num_classes, embed_dim, generator), persistent=True)
        self.inter_weight = float(inter_weight)
        self.intra_weight = float(intra_weight)
        self.scale = float(scale)
        self.temperature = float(temperature)
        self.reduction = reduction
        self.pixels_per_class = int(pixels_per_class)
        self.normalize = bool(normalize)
        self.centre = bool(centre)

    @classmethod
    def from_config(cls, c: Any, ctx: BuildContext) -> In2NeCT:
        reg = cls(
            ctx.num_classes, ctx.embed_dim, inter_weight=c.inter_weight, intra_weight=c.intra_weight,
            scale=c.scale, temperature=c.temperature, reduction=c.reduction,
            pixels_per_class=c.pixels_per_class, normalize=c.normalize, centre=c.centre,
            weight=c.weight, ignore_index=ctx.ignore_index,
            sync_centers=ctx.sync_centers, generator=ctx.generator(1),
        )
        reg.generator = ctx.generator(2)
        return reg

    def terms(self, embedding: Tensor, labels: Tensor) -> dict[str, Tensor]:
        # no early exit on a batch without valid pixels: with sync_centers every rank must join the
        # all-reduce; absent classes contribute 0 (still in the graph) by construction
        z, index = self.gather(embedding, labels)
        out: dict[str, Tensor] = {}
        if self.inter_weight:
            means, counts, _ = self.centers(z, index)
            inter = inter_class_loss(means, counts, self.etf, self.scale, self.reduction, self.normalize, self.centre)
            out["in2nect_inter"] = self.weight * self.inter_weight * inter
        if self.intra_weight:
            pick = sample_per_class(index, self.num_classes, self.pixels_per_class, self.generator)
            intra = intra_class_loss(
                F.normalize(z.index_select(0, pick), dim=1), index[pick], self.temperature, self.reduction,
                self.num_classes,
            )
            out["in2nect_intra"] = self.weight * self.intra_weight * intra
        return out


@dataclass
class CeCoConfig:
    """Center Collapse (Zhong et al., CVPR 2023) Eq. 4-5, ``weight`` = lambda = 0.5, the paper's best
    on 2D images (ADE20K, Table 2; 0.4 was best on the 3D ScanNet200).

    ``center_classifier`` / ``pixel_classifier``: "fixed" (simplex ETF, never trained) or
    "learned", the rows of the paper's Table 1 (the method: PC learned, CC fixed).
    ``head_relu``: a ReLU after the center head's Linear (the released code; non-negative centres
    cannot reach the ETF's signed vertices). ``use_prior``: add log image-level class frequencies
    to the center logits (a balanced softmax the released code adds; not in Eq. 4).
    """

    enabled: bool = False
    weight: float = 0.5
    proj_dim: int = 128
    scale: float = 5.0
    center_classifier: ClassifierKind = "fixed"
    pixel_classifier: ClassifierKind = "learned"
    head_relu: bool = False
    use_prior: bool = False
    #: "sum" over the present classes as Eq. 4 writes it, or "mean"
    reduction: Reduction = "sum"


@register_regularizer("ceco")
class CeCo(_Regularizer):
    """Center Collapse regularizer (Zhong et al., CVPR 2023), Eq. 3-5.

    Embedding -> 1x1 conv + BN projection to ``proj_dim`` -> bilinear upsampling to label
    resolution (the paper's centres are per pixel, N = HW; the 1x1 conv + BN projection and the
    bilinear upsampling are rsseg's; computed exactly without materialising it, see
    :func:`~rsseg.losses.centers.upsampled_class_sums`) -> class centers of the batch (Eq. 3) ->
    Linear center head -> L2 normalisation -> center classifier scaled by alpha = ``scale`` ->
    CE (Eq. 4, summed over the present classes as written; ``reduction="mean"`` averages).
    Returns ``{"ceco": weight * L_CR}`` (Eq. 5).

    Options (defaults = the paper's equations): ``head_relu`` adds the released code's ReLU after
    the head's Linear (non-negative centres can never reach the ETF's signed vertices);
    ``log_prior`` adds log image-level class frequencies to the center logits (the released code's
    balanced softmax, not in Eq. 4). ``center_classifier`` / ``pixel_classifier`` give the rows
    of Table 1: the center classifier "fixed" (simplex ETF buffer, the method) or "learned" (a
    parameter initialised at the ETF); the pixel classifier "learned" (the method) or "fixed", in
    which case :meth:`attach` sets the segmentation model's classifier to a simplex ETF and
    freezes it.
    """

    Section = CeCoConfig

    def __init__(
        self,
        num_classes: int,
        in_dim: int,
        proj_dim: int = CeCoConfig.proj_dim,
        scale: float = CeCoConfig.scale,
        log_prior: Tensor | None = None,
        center_classifier: ClassifierKind = CeCoConfig.center_classifier,
        pixel_classifier: ClassifierKind = CeCoConfig.pixel_classifier,
        head_relu: bool = CeCoConfig.head_relu,
        reduction: Reduction = CeCoConfig.reduction,
        weight: float = CeCoConfig.weight,
        ignore_index: int = IGNORE_INDEX,
        sync_centers: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(num_classes, weight, ignore_index, sync_centers)
        for key, value in (("center_classifier", center_classifier), ("pixel_classifier", pixel_classifier)):
            check_choice(f"loss.regularizers.ceco.{key}", value, ClassifierKind)
        self.project = nn.Sequential(nn.Conv2d(in_dim, proj_dim, 1, bias=False), nn.BatchNorm2d(proj_dim))
        self.head = nn.Sequential(nn.Linear(proj_dim, proj_dim), *([nn.ReLU()] if head_relu else []))
        etf = simplex_etf(num_classes, proj_dim, generator)
        self.register_buffer("etf", etf, persistent=True)
        self.classifier = None if center_classifier == "fixed" else nn.Parameter(etf.clone())
        self.register_buffer("log_prior", _check_prior(log_prior, num_classes, "CeCo"), persistent=True)
        self.scale = float(scale)
        self.reduction = reduction
        self.pixel_classifier = pixel_classifier
        self.in_dim = in_dim
        self._pixel_etf = simplex_etf(num_classes, in_dim, generator) if pixel_classifier == "fixed" else None

    @classmethod
    def uses_region_prior(cls, section: CeCoConfig) -> bool:
        return section.use_prior

    @classmethod
    def from_config(cls, c: Any, ctx: BuildContext) -> CeCo:
        return cls(
            ctx.num_classes, ctx.embed_dim, proj_dim=c.proj_dim, scale=c.scale,
            log_prior=ctx.log_region_prior if c.use_prior else None, center_classifier=c.center_classifier,
            pixel_classifier=c.pixel_classifier, head_relu=c.head_relu, reduction=c.reduction, weight=c.weight,
            ignore_index=ctx.ignore_index, sync_centers=ctx.sync_centers, generator=ctx.generator(1),
        )

    def attach(self, model: nn.Module) -> None:
        """With ``pixel_classifier="fixed"``: the model's pixel classifier becomes a frozen ETF."""
        if self._pixel_etf is None:
            return
        weight = model.head.classifier.weight  # [K, embed_dim, 1, 1]
        if tuple(weight.shape[:2]) != tuple(self._pixel_etf.shape):
            raise ValueError(f"pixel classifier {tuple(weight.shape)} does not match the ETF {tuple(self._pixel_etf.shape)}")
        with torch.no_grad():
            weight.copy_(self._pixel_etf[:, :, None, None])
        weight.requires_grad_(False)

    def terms(self, embedding: Tensor, labels: Tensor) -> dict[str, Tensor]:
        x = embedding.float()
        if labels.ndim != 3 or labels.shape[0] != x.shape[0]:
            raise ValueError(f"labels must have shape [{x.shape[0]}, H, W], got {tuple(labels.shape)}")
        weights, counts = upsample_class_weights(labels, tuple(x.shape[-2:]), self.num_classes, self.ignore_index)
        conv, bn = self.project
        if type(bn) is nn.BatchNorm2d:  # SyncBatchNorm (global statistics) takes the generic path
            sums = conv_bn_class_sums(x, conv, bn, weights)
        else:
            sums = weighted_class_sums(self.project(x), weights)
        if self.sync_centers:
            sums, counts = all_reduce_sums(sums, counts)
        # no early exit for a batch without valid pixels (a host sync): absent classes weigh 0 in
        # the loss and every parameter stays in the graph
        centers = self.head(means_from_sums(sums, counts))
        classifier = self.etf if self.classifier is None else self.classifier
        loss = center_collapse_loss(centers, counts, classifier, self.scale, self.log_prior, self.reduction)
        return {"ceco": self.weight * loss}


@dataclass
class RegionRebalanceConfig:
    """Region Rebalance (Cui et al.) Eq. 8-9, ``weight`` = lambda = 0.3; ``use_prior`` adds the
    log region frequencies log F(k) (Eq. 7; off = plain CE on regions, the Fig. 7 ablation)."""

    enabled: bool = False
    weight: float = 0.3
    use_prior: bool = True


@register_regularizer("rr")
class RegionRebalance(_Regularizer):
    """Region Rebalance (Cui et al.): balanced-softmax classifier on per-image class means.

    Region features ``r`` are the mean embedding of each class present in each image (Sec. 3.2);
    a trainable linear region classifier gives logits, and ``L_reg`` (Eq. 8) is the cross-entropy
    of ``logits + log F`` averaged over regions, with ``F`` the region (image-level) class
    frequencies (Eq. 7) passed as ``log_prior [K]``; ``None`` means a uniform prior (plain CE,
    the "w/o prior" ablation of Fig. 7). Returns ``{"rr": weight * L_reg}`` (Eq. 9, lambda = 0.3).
    Regions are per image, so nothing is reduced across DDP ranks.
    """

    Section = RegionRebalanceConfig

    def __init__(
        self,
        num_classes: int,
        in_dim: int,
        log_prior: Tensor | None = None,
        weight: float = RegionRebalanceConfig.weight,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__(num_classes, weight, ignore_index, sync_centers=False)
        self.classifier = nn.Linear(in_dim, num_classes)
        prior = _check_prior(log_prior, num_classes, "RegionRebalance")
        self.register_buffer("log_prior", torch.zeros(num_classes) if prior is None else prior, persistent=True)

    @classmethod
    def uses_region_prior(cls, section: RegionRebalanceConfig) -> bool:
        return section.use_prior

    @classmethod
    def from_config(cls, c: Any, ctx: BuildContext) -> RegionRebalance:
        prior = ctx.log_region_prior if c.use_prior else None
        return cls(ctx.num_classes, ctx.embed_dim, log_prior=prior, weight=c.weight, ignore_index=ctx.ignore_index)

    def terms(self, embedding: Tensor, labels: Tensor) -> dict[str, Tensor]:
        regions, counts = image_class_means(embedding, labels, self.num_classes, self.ignore_index)
        if not bool((counts > 0).any()):
            return self.zero(embedding, ["rr"])
        logits = self.classifier(regions) + self.log_prior
        target = torch.arange(regions.shape[0], device=regions.device) % self.num_classes
        ce = F.cross_entropy(logits, target, reduction="none")
        return {"rr": self.weight * present_mean(ce, counts > 0)}


@dataclass
class NCFeatureConfig:
    """L_W + L_B feature terms (Liu et al. Eq. 13, 15, 16); ``normalize`` L2-normalises the
    embedding first (not in the paper); L_W ``reduction`` "sum" as Eq. 13, or "mean"."""

    enabled: bool = False
    weight: float = 1.0
    lambda_w: float = 0.01
    lambda_b: float = 0.1
    normalize: bool = True
    reduction: Reduction = "sum"


@register_regularizer("nc")
class NCFeature(_Regularizer):
    """L_W + L_B feature terms (Liu et al., Eq. 13, 15, 16).

    ``normalize`` (on by default; not in the paper, which states the terms on raw features h_i)
    L2-normalises the embedding first: on raw features L_W can be minimised by shrinking every
    embedding, which the segmentation loss does not prevent. L_W is summed over classes as Eq. 13
    writes it (``reduction="mean"`` averages). The paper's lambdas (0.01, 0.1) are its CIFAR-10
    values, used there together with class rebalancing (DRW/cRT). Returns ``{"nc_within": weight * lambda_w * L_W,
    "nc_between": weight * lambda_b * L_B}``. With ``sync_centers`` the class means are global;
    L_W's per-class averages use the local pixels (each rank's share is averaged by DDP).
    """

    Section = NCFeatureConfig

    def __init__(
        self,
        num_classes: int,
        lambda_w: float = NCFeatureConfig.lambda_w,
        lambda_b: float = NCFeatureConfig.lambda_b,
        normalize: bool = NCFeatureConfig.normalize,
        reduction: Reduction = NCFeatureConfig.reduction,
        weight: float = NCFeatureConfig.weight,
        ignore_index: int = IGNORE_INDEX,
        sync_centers: bool = False,
    ) -> None:
        super().__init__(num_classes, weight, ignore_index, sync_centers)
        self.lambda_w = float(lambda_w)
        self.lambda_b = float(lambda_b)
        self.normalize = bool(normalize)
        self.reduction = reduction

    @classmethod
    def from_config(cls, c: Any, ctx: BuildContext) -> NCFeature:
        return cls(
            ctx.num_classes, lambda_w=c.lambda_w, lambda_b=c.lambda_b, normalize=c.normalize,
            reduction=c.reduction, weight=c.weight,
            ignore_index=ctx.ignore_index, sync_centers=ctx.sync_centers,
        )

    def terms(self, embedding: Tensor, labels: Tensor) -> dict[str, Tensor]:
        z, index = self.gather(embedding, labels)  # no early exit: see In2NeCT.terms
        if self.normalize:
            z = F.normalize(z, dim=1)
        means, counts, local = self.centers(z, index)
        # index already marks ignored pixels with K, so K plays the ignore value here
        within = within_class_loss(z, index, means, local, ignore_index=self.num_classes, reduction=self.reduction)
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
    ignore_index: int = IGNORE_INDEX,
    seed: int = 0,
) -> nn.ModuleDict:
    """Build every enabled regularizer of ``cfg`` through the registry (keys = section names).

    ``log_region_prior [K]``: log image-level class frequencies (see :func:`rsseg.data.stats.log_prior_from_counts`),
    used where a section's ``use_prior`` asks for it. ``seed`` seeds each regularizer's own
    generators (ETF, pixel sampling), so enabling one never shifts the global RNG stream.
    """
    ctx = BuildContext(num_classes, embed_dim, ignore_index, cfg.sync_centers, log_region_prior, seed)
    out = nn.ModuleDict()
    for name in cfg.enabled():
        out[name] = REGULARIZERS.get(name).from_config(getattr(cfg, name), ctx)
    return out
