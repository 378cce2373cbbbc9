"""Class centers: labels at embedding resolution, per-class sums/counts/means, DDP reduction.

Every regularizer gathers pixel embeddings by class. This module is the one place where
labels meet embeddings: :func:`labels_to_embedding` brings labels down to the embedding grid,
and :func:`upsampled_class_sums` gives class sums of an embedding bilinearly upsampled to the
label grid (the paper's centres are over all N = HW pixels) without materialising the upsampled tensor.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from rsseg.constants import IGNORE_INDEX
from rsseg.errors import LabelError


def labels_to_embedding(labels: Tensor, size: tuple[int, int]) -> Tensor:
    """Bring labels ``[B, H, W]`` to an embedding grid ``size = (h, w)`` by centre sampling.

    Output pixel ``(i, j)`` takes the label at ``(floor((i + 0.5) H / h), floor((j + 0.5) W / w))``,
    the label nearest the centre of the stride block it summarises. Nearest-neighbour resizing
    (``F.interpolate(mode="nearest")``) samples the top-left corner instead, which shifts every
    label by half a block against a convolutional feature map (whose receptive fields are
    centred) and biases thin classes (roads) out of the sample. Exact for any ratio, also
    non-integer; labels already at ``size`` are returned unchanged. Ignore values pass through.
    """
    if labels.ndim != 3:
        raise ValueError(f"labels must have shape [B, H, W], got {tuple(labels.shape)}")
    big_h, big_w = labels.shape[-2:]
    h, w = int(size[0]), int(size[1])
    if (h, w) == (big_h, big_w):
        return labels
    rows = ((torch.arange(h, device=labels.device, dtype=torch.float64) + 0.5) * (big_h / h)).floor().long()
    cols = ((torch.arange(w, device=labels.device, dtype=torch.float64) + 0.5) * (big_w / w)).floor().long()
    return labels.index_select(1, rows.clamp_(max=big_h - 1)).index_select(2, cols.clamp_(max=big_w - 1))


def flat_class_index(labels: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Flatten labels to ``[N]`` int64 with ignored pixels mapped to the spare bin ``num_classes``.

    Raises :class:`~rsseg.errors.LabelError` for a value that is neither a class nor ``ignore_index``
    (a dataset whose label encoding was not mapped to rsseg's convention).
    """
    y = labels.reshape(-1).long()
    ignored = y == ignore_index
    bad = ~ignored & ((y < 0) | (y >= num_classes))
    if bool(bad.any()):
        found = torch.unique(y[bad])[:8].tolist()
        raise LabelError(
            f"labels hold values {found} outside the classes 0..{num_classes - 1} and the ignore value "
            f"{ignore_index}: map the dataset's label encoding to class indices (no-data -> {ignore_index})"
        )
    return torch.where(ignored, torch.full_like(y, num_classes), y)


def compute_dtype(x: Tensor) -> torch.dtype:
    """float32 for half/bfloat16/float32 inputs, float64 kept (tests compare in float64)."""
    return torch.promote_types(x.dtype, torch.float32)


def flatten_embedding(embedding: Tensor) -> Tensor:
    """``[B, D, h, w]`` -> ``[B*h*w, D]`` in the compute dtype."""
    if embedding.ndim != 4:
        raise ValueError(f"embedding must have shape [B, D, h, w], got {tuple(embedding.shape)}")
    d = embedding.shape[1]
    return embedding.to(compute_dtype(embedding)).permute(0, 2, 3, 1).reshape(-1, d)


def scatter_class_sums(z: Tensor, index: Tensor, bins: int) -> tuple[Tensor, Tensor]:
    """Sum rows of ``z [N, D]`` into ``bins`` groups by ``index [N]`` (one ``index_add``).

    ``index == bins`` marks rows to drop (ignored pixels). Returns ``(sums [bins, D], counts [bins])``.
    """
    sums = z.new_zeros(bins + 1, z.shape[1]).index_add(0, index, z)[:bins]
    counts = torch.bincount(index, minlength=bins + 1)[:bins]
    return sums, counts


def all_reduce_sums(sums: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
    """Sum class sums and counts over DDP ranks when ``torch.distributed`` is initialised.

    ``sums`` goes through the autograd-aware ``torch.distributed.nn.functional.all_reduce``: its
    backward all-reduces the incoming gradient, so each rank's pixels receive the gradient of the
    loss on the global centers (DDP's gradient averaging then yields the gradient of the mean
    loss). ``counts`` carries no gradient and uses the plain collective.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return sums, counts
    from torch.distributed.nn.functional import all_reduce

    sums = all_reduce(sums)
    counts = counts.clone()
    dist.all_reduce(counts)
    return sums, counts


def means_from_sums(sums: Tensor, counts: Tensor) -> Tensor:
    """Class means ``sums / counts``; absent classes (count 0) get a zero mean, never NaN."""
    return sums / counts.clamp_min(1).to(sums.dtype).unsqueeze(1)


def class_means(
    embedding: Tensor,
    labels: Tensor,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    sync: bool = False,
) -> tuple[Tensor, Tensor]:
    """Per-class mean embedding (In2NeCT Eq. 4, CeCo Eq. 3) in one scatter-add pass.

    Args:
        embedding: ``[B, D, h, w]``, any float dtype (computed in float32, float64 kept).
        labels: ``[B, h, w]`` class indices; labels at another resolution are brought to the
            embedding grid with :func:`labels_to_embedding`.
        sync: reduce sums and counts over DDP ranks so the means use the global batch.

    Returns:
        ``(means [K, D], counts [K] int64)``: absent classes have count 0 and a zero mean.
        Differentiable with respect to ``embedding``.
    """
    labels = labels_to_embedding(labels, tuple(embedding.shape[-2:]))
    if labels.shape[0] != embedding.shape[0]:
        raise ValueError(f"embedding batch {embedding.shape[0]} and labels batch {labels.shape[0]} differ")
    z = flatten_embedding(embedding)
    sums, counts = scatter_class_sums(z, flat_class_index(labels, num_classes, ignore_index), num_classes)
    if sync:
        sums, counts = all_reduce_sums(sums, counts)
    return means_from_sums(sums, counts), counts


def image_class_means(
    embedding: Tensor, labels: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> tuple[Tensor, Tensor]:
    """Region features (RR, Cui et al. Sec. 3.2): the mean embedding of each class in each image.

    Returns ``(means [B*K, D], counts [B*K])``, row ``b*K + k`` for class ``k`` of image ``b``.
    """
    labels = labels_to_embedding(labels, tuple(embedding.shape[-2:]))
    b, _, h, w = embedding.shape
    y = flat_class_index(labels, num_classes, ignore_index).view(b, h * w)
    image = torch.arange(b, device=y.device).unsqueeze(1) * num_classes
    bins = b * num_classes
    index = torch.where(y == num_classes, torch.full_like(y, bins), y + image).reshape(-1)
    sums, counts = scatter_class_sums(flatten_embedding(embedding), index, bins)
    return means_from_sums(sums, counts), counts


def upsample_class_weights(
    labels: Tensor, size: tuple[int, int], num_classes: int, ignore_index: int = IGNORE_INDEX, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """Weights ``[B, K, h, w]`` with ``sum_{p in class k} up(f)_p = sum_q f_q weights[k, q]``, and counts.

    ``up`` is bilinear upsampling (``align_corners=False``) from the grid ``size = (h, w)`` to the
    label grid ``[B, H, W]``; the weights are the class masks pushed through its adjoint (the
    ``upsample_bilinear2d_backward`` kernel that autograd runs for ``F.interpolate``). Returns
    ``(weights, counts [K])`` with counts at label resolution; labels already at ``size`` give the
    one-hot masks themselves.
    """
    b = labels.shape[0]
    big = tuple(labels.shape[-2:])
    h, w = int(size[0]), int(size[1])
    y = flat_class_index(labels, num_classes, ignore_index)
    counts = torch.bincount(y, minlength=num_classes + 1)[:num_classes]
    classes = torch.arange(num_classes, device=y.device).view(1, num_classes, 1, 1)
    onehot = (y.view(b, 1, *big) == classes).to(dtype)  # ignored pixels (= K) match no class
    if big == (h, w):
        return onehot, counts
    # the adjoint kernel itself: what autograd would run for F.interpolate(size=big) after a
    # forward pass on a K-channel probe, minus that forward pass
    weights = torch.ops.aten.upsample_bilinear2d_backward(
        onehot, output_size=list(big), input_size=[b, num_classes, h, w], align_corners=False
    )
    return weights, counts


def upsampled_class_sums(
    features: Tensor, labels: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> tuple[Tensor, Tensor]:
    """Class sums of ``features [B, C, h, w]`` bilinearly upsampled to the label grid ``[B, H, W]``.

    CeCo (Zhong et al.) upsamples features to label resolution before gathering centers. Class
    sums are linear in the upsampled map, so ``sum_{p in k} up(f)_p = sum_q f_q (up^T 1_k)_q``
    (:func:`upsample_class_weights`), contracted with the low-resolution features. The result
    equals upsample-then-sum exactly while never building a ``[B, C, H, W]`` tensor.

    Returns ``(sums [K, C], counts [K])`` with counts at label resolution.
    """
    b, c, h, w = features.shape
    if labels.ndim != 3 or labels.shape[0] != b:
        raise ValueError(f"labels must have shape [{b}, H, W], got {tuple(labels.shape)}")
    dtype = compute_dtype(features)
    weights, counts = upsample_class_weights(labels, (h, w), num_classes, ignore_index, dtype)
    return weighted_class_sums(features.to(dtype), weights), counts


def weighted_class_sums(features: Tensor, weights: Tensor) -> Tensor:
    """``sum_{b, q} weights[b, k, q] features[b, :, q]`` -> ``[K, C]`` (one batched matmul).

    ``features [B, C, h, w]``, ``weights [B, K, h, w]``; ``bmm`` here is several times faster on
    CPU than the equivalent ``einsum``, which copies its operands into another layout first.
    """
    b, c = features.shape[:2]
    k = weights.shape[1]
    f = features.reshape(b, c, -1)
    return torch.bmm(weights.reshape(b, k, -1).to(f.dtype), f.transpose(1, 2)).sum(0)


def conv_bn_class_sums(x: Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d, weights: Tensor) -> Tensor:
    """``sum_q weights[b, k, q] bn(conv(x))[b, :, q]`` -> ``[K, P]`` without building ``bn(conv(x))``.

    ``conv`` is a bias-free 1x1 convolution ``D -> P`` and ``bn`` its BatchNorm, so the map is affine
    per channel: ``bn(Wx)_c = a_c (W x - mu)_c + beta_c`` with ``a = gamma / sqrt(var + eps)``. In
    training ``mu = W xbar`` and the biased ``var_c = W_c Cov(x) W_c^T`` come from the input's mean
    and ``D x D`` covariance (over batch and pixels, as BatchNorm's statistics are), and the running
    statistics are updated exactly as ``bn`` would; in eval the running statistics are used. The
    ``[B, P, h, w]`` projection and its BatchNorm passes (forward and backward) are replaced by
    ``[K, D]`` weighted sums and one ``D x D`` covariance. ``x [B, D, h, w]``, ``weights [B, K, h, w]``.
    """
    b, d, h, w = x.shape
    k = weights.shape[1]
    n = b * h * w
    xf = x.reshape(b, d, h * w)
    mass = weights.reshape(b, k, h * w).sum((0, 2)).to(x.dtype)  # [K]
    lin = conv.weight.reshape(conv.out_channels, d).to(x.dtype)  # [P, D]
    sums = weighted_class_sums(x, weights) @ lin.T  # class sums of W x, [K, P]
    use_batch = bn.training or (bn.running_mean is None and bn.running_var is None)
    if use_batch:
        xbar = xf.mean((0, 2))  # [D]
        xc = xf - xbar.view(1, d, 1)
        cov = torch.bmm(xc, xc.transpose(1, 2)).sum(0) / n  # [D, D], biased like BatchNorm's batch variance
        mean = lin @ xbar
        var = ((lin @ cov) * lin).sum(1)
        if bn.training and bn.track_running_stats:
            _update_running_stats(bn, mean.detach(), var.detach(), n)
    else:
        mean, var = bn.running_mean.to(x.dtype), bn.running_var.to(x.dtype)
    scale = torch.rsqrt(var + bn.eps)
    if bn.affine:
        scale = scale * bn.weight.to(x.dtype)
    out = (sums - mass.unsqueeze(1) * mean) * scale
    if bn.affine:
        out = out + mass.unsqueeze(1) * bn.bias.to(x.dtype)
    return out


def _update_running_stats(bn: nn.BatchNorm2d, mean: Tensor, var: Tensor, n: int) -> None:
    """BatchNorm's own running-statistics update (momentum, or a cumulative mean when ``None``)."""
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            factor = 1.0 / float(bn.num_batches_tracked)
    with torch.no_grad():
        bn.running_mean.mul_(1 - factor).add_(mean.to(bn.running_mean.dtype), alpha=factor)
        unbiased = var * (n / max(n - 1, 1))
        bn.running_var.mul_(1 - factor).add_(unbiased.to(bn.running_var.dtype), alpha=factor)
