"""Neural-collapse loss terms as pure functions of class means / sampled embeddings.

In2NeCT (Shen et al.): :func:`inter_class_loss` (L_inter), :func:`intra_class_loss` (L_intra).
CeCo (Zhong et al., CVPR 2023): :func:`center_collapse_loss` (L_CR).
Long-tailed NC (Liu et al.): :func:`within_class_loss` (L_W, Eq. 13),
:func:`between_class_loss` (L_B, Eq. 15).

Absent classes (count 0) never contribute and never produce NaN/inf, in values or gradients:
masks are applied as multiplicative weights or to finite values, never by ``where`` on a branch
whose gradient could be NaN.

Every per-class term is summed over the present classes by default, as the equations write it
(In2NeCT Eq. 5-6, CeCo Eq. 4, Liu et al. Eq. 13); ``reduction="mean"`` averages instead.
Rows are gathered with ``index_select``, never ``x[index]``: the backward of advanced indexing
accumulates with atomics on CPU threads, so two runs with one seed would differ in the last bits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rsseg.constants import IGNORE_INDEX
from rsseg.losses.centers import flat_class_index, means_from_sums, scatter_class_sums


def present_mean(values: Tensor, present: Tensor) -> Tensor:
    """Mean of ``values`` over ``present`` entries; 0 (still in the graph) when none is present."""
    weights = present.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


def present_reduce(values: Tensor, present: Tensor, reduction: str) -> Tensor:
    """``"sum"`` or ``"mean"`` of ``values`` over ``present`` entries (0, in the graph, if none)."""
    if reduction == "sum":
        return (values * present.to(values.dtype)).sum()
    if reduction == "mean":
        return present_mean(values, present)
    raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")


def centre_means(means: Tensor, counts: Tensor) -> Tensor:
    """Class means minus the global mean of the pixels they came from (``z_k - z_G``).

    ``z_G = sum_k n_k z_k / sum_k n_k`` is the mean of every valid pixel, the centring of the NC2
    definition (In2NeCT Sec. 3, Papyan et al.). Raw means of a bias-free projection of non-negative
    features can only sum to zero, as simplex-ETF vertices do, if the projection turns singular;
    centred means can reach the ETF at full rank.
    """
    weights = counts.to(means.dtype).unsqueeze(1)
    glob = (means * weights).sum(0, keepdim=True) / weights.sum().clamp_min(1.0)
    return means - glob


def _center_cross_entropy(
    means: Tensor,
    counts: Tensor,
    classifier: Tensor,
    scale: float,
    log_prior: Tensor | None,
    reduction: str = "sum",
    normalize: bool = True,
) -> Tensor:
    """CE of each present class mean (L2-normalised unless ``normalize`` is off, times ``scale``)
    against its own row of ``classifier``."""
    k = means.shape[0]
    if normalize:
        means = F.normalize(means, dim=1)
    logits = scale * means @ classifier.to(means.dtype).T  # [K, K]
    if log_prior is not None:
        logits = logits + log_prior.to(means.dtype).unsqueeze(0)
    ce = F.cross_entropy(logits, torch.arange(k, device=means.device), reduction="none")
    return present_reduce(ce, counts > 0, reduction)


def inter_class_loss(
    means: Tensor,
    counts: Tensor,
    etf: Tensor,
    scale: float = 5.0,
    reduction: str = "sum",
    normalize: bool = True,
    centre: bool = False,
) -> Tensor:
    """In2NeCT L_inter: class means against the fixed simplex-ETF classifier.

    ``logits = scale * normalize(means) @ etf.T`` (``[K, K]``), target of row ``k`` is ``k``;
    cross-entropy summed over present classes (``counts > 0``) as Eq. 5's ``sum_k`` is, or
    averaged with ``reduction="mean"``. Shapes: ``means [K, D]``,
    ``counts [K]``, ``etf [K, D]`` with unit-norm rows, so logits are scaled cosines.

    Why this is the paper's Eq. 10 form and not Eq. 5 read literally: Eq. 5 normalises
    ``exp(zbar_k . w*_k)`` by ``sum_k' exp(zbar_k' . w*_k')``, i.e. every mean against its OWN
    vertex. That is minimised by equal matched scores (e.g. all means zero) and never pushes a
    mean away from the other vertices, so it cannot separate classes. The paper's own gradient
    analysis (Eq. 8-10) uses ``p(zbar_k) = exp(zbar_k . w*_k) / sum_k' exp(zbar_k . w*_k')``, the
    standard softmax of one mean over all vertices, which is what this function computes (as CeCo
    L_CR does).

    Two departures from Eq. 5, both options: ``normalize`` (on by default; not in the paper)
    L2-normalises each mean and multiplies by ``scale`` (CeCo's alpha; neither paper gives a
    value), which keeps the logits bounded so the loss cannot be driven down by inflating
    embedding norms; ``normalize=False, scale=1`` is Eq. 5's raw dot product. ``centre``
    (off by default, as Eq. 5 writes it) subtracts the global pixel mean first
    (:func:`centre_means`, the paper's own NC2 definition).
    """
    if centre:
        means = centre_means(means, counts)
    return _center_cross_entropy(means, counts, etf, scale, None, reduction, normalize)


def center_collapse_loss(
    means: Tensor,
    counts: Tensor,
    etf: Tensor,
    scale: float = 5.0,
    log_prior: Tensor | None = None,
    reduction: str = "sum",
) -> Tensor:
    """CeCo L_CR (Eq. 4): CE of normalised centers against the ETF scaled by alpha = ``scale``,
    summed over the present classes as Eq. 4 writes it (``reduction="mean"`` averages).

    ``log_prior [K]``, if given, is added to every row of logits (balanced softmax). The released
    CeCo code adds the log of image-level class frequencies there, which compensates for head
    classes being present as centers in more batches than tail classes. Shapes as in
    :func:`inter_class_loss`; same Eq. 10 reading of the softmax.
    """
    return _center_cross_entropy(means, counts, etf, scale, log_prior, reduction)


class _GroupExpSums(torch.autograd.Function):
    """``(G [N, K], m [N])``: ``G[i, c] = sum_{j in class c, j != i} exp(s_ij - m_i)``, ``s = z z^T / T``.

    ``m_i = max_{j != i} s_ij`` (a detached shift; 0 for a row without another pixel). One
    ``N x N`` buffer is built in the forward and kept for the backward, which forms
    ``dS = E * (dG onehot^T)`` in one more and returns ``dz = (dS + dS^T) z / T``; autograd through
    the same ops keeps about five ``N x N`` tensors and makes as many passes over them.
    """

    @staticmethod
    def forward(ctx, z: Tensor, onehot: Tensor, inv_t: float) -> tuple[Tensor, Tensor]:
        e = torch.mm(z * inv_t, z.T)
        e.diagonal().fill_(float("-inf"))  # self-similarity excluded everywhere
        shift = e.max(dim=1, keepdim=True).values
        shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
        e.sub_(shift).exp_()  # the diagonal becomes exp(-inf) = 0
        group = torch.mm(e, onehot)
        ctx.save_for_backward(z, onehot, e)
        ctx.inv_t = inv_t
        ctx.mark_non_differentiable(shift)
        return group, shift.squeeze(1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_group: Tensor, grad_shift: Tensor | None) -> tuple[Tensor, None, None]:
        z, onehot, e = ctx.saved_tensors
        ds = torch.mm(grad_group, onehot.T).mul_(e)
        grad_z = torch.mm(ds, z).add_(torch.mm(ds.T, z)).mul_(ctx.inv_t)
        return grad_z, None, None


def intra_class_loss(
    z: Tensor, y: Tensor, temperature: float = 1.0, reduction: str = "sum", num_classes: int | None = None
) -> Tensor:
    """In2NeCT L_intra (Eq. 6): class-balanced supervised contrastive loss on sampled pixels.

    Args:
        z: ``[N, D]`` L2-normalised embeddings (already sampled, e.g. <= M pixels per class).
        y: ``[N]`` class indices (no ignore values).
        num_classes: ``K`` with ``y < K``; given, nothing waits on the device (no ``unique``, no
            data-dependent branch); ``None`` takes the classes found in ``y``.

    For anchor ``i`` of class ``k`` with ``S_c`` the samples of class ``c``::

        den_i  = sum_{c present} 1/|S_c \\ {i}| * sum_{j in S_c, j != i} exp(z_i.z_j / T)
        loss_i = log den_i - mean_{i' in S_k, i' != i} z_i.z_i' / T

    Averaged over the anchors of a class, then summed over the classes with >= 2 samples as Eq. 6's
    ``sum_k`` is (``reduction="mean"`` averages them); 0 (still in the graph) when fewer than 2
    classes are present. ``temperature`` 1.0 is Eq. 6 as written (no temperature). The per-class ``1/|S_c|`` weights in the
    denominator are the class balancing of Eq. 6; self-similarity is excluded everywhere.
    Computed in log space: per (anchor, class) log-sum-exp (:class:`_GroupExpSums`, one ``N x N``
    buffer), then a log-sum-exp over classes. The positive term needs no ``N x N`` matrix:
    ``sum_{j in S_k, j != i} z_i.z_j = z_i.(sum_{j in S_k} z_j) - z_i.z_i``.
    """
    n = z.shape[0]
    if n < 2:
        return z.sum() * 0.0
    if num_classes is None:
        classes, y = torch.unique(y, return_inverse=True)
        num_classes = classes.numel()
    onehot = F.one_hot(y, num_classes).to(z.dtype)  # [N, K]
    class_size = onehot.sum(0)  # [K]
    others = class_size.unsqueeze(0) - onehot  # |S_c \ {i}|, [N, K]

    group, shift = _GroupExpSums.apply(z, onehot, 1.0 / temperature)  # shifted group sums; [N, K]
    tiny = torch.finfo(z.dtype).tiny
    # clamp_min keeps log finite for empty groups (their weight is masked to -inf below, and the
    # clamp's zero gradient stops NaN from flowing back through them).
    log_group = torch.log(group.clamp_min(tiny)) - torch.log(others.clamp_min(1.0))
    log_group = log_group.masked_fill(others == 0, float("-inf"))
    log_den = torch.logsumexp(log_group, dim=1) + shift  # [N]; finite: n >= 2 gives every row a group

    pos_count = others.gather(1, y.unsqueeze(1)).squeeze(1)  # |S_k| - 1
    own_sum = (onehot.T @ z).index_select(0, y)  # sum_{j in S_k} z_j per anchor, [N, D]
    pos_sum = ((z * own_sum).sum(1) - (z * z).sum(1)) / temperature
    anchor_loss = log_den - pos_sum / pos_count.clamp_min(1.0)
    has_pos = (pos_count > 0).to(z.dtype)
    per_class = (onehot * (anchor_loss * has_pos).unsqueeze(1)).sum(0) / class_size.clamp_min(1.0)
    two_classes = ((class_size > 0).sum() >= 2).to(z.dtype)  # a weight, not a branch: no host sync
    return present_reduce(per_class, class_size >= 2, reduction) * two_classes


def within_class_loss(
    features: Tensor,
    labels: Tensor,
    means: Tensor,
    counts: Tensor,
    ignore_index: int = IGNORE_INDEX,
    reduction: str = "sum",
) -> Tensor:
    """Long-tailed NC L_W (Liu et al. Eq. 13): inverse-class-size within-class distance.

    ``sum_k (1/n_k) sum_{y_i = k} ||h_i - mu_k||^2``: per class the mean squared distance to the
    class mean, summed over the present classes as Eq. 13 writes it (``reduction="mean"`` divides
    by the number of present classes).

    Args:
        features: ``[B, D, h, w]`` with labels ``[B, h, w]`` at the same grid, or ``[N, D]``
            with labels ``[N]``.
        means, counts: ``[K, D]``, ``[K]`` from :func:`~rsseg.losses.centers.class_means` on the
            same features (gradient flows through the means too; the paper does not say).
    """
    k, d = means.shape
    z = features.to(means.dtype)
    if z.ndim == 4:
        z = z.permute(0, 2, 3, 1).reshape(-1, d)
    index = flat_class_index(labels, k, ignore_index)
    padded = torch.cat([means, means.new_zeros(1, d)])
    sq = (z - padded.index_select(0, index)).pow(2).sum(1, keepdim=True)  # [N, 1]
    per_class_sum, _ = scatter_class_sums(sq, index, k)
    per_class = means_from_sums(per_class_sum, counts).squeeze(1)
    return present_reduce(per_class, counts > 0, reduction)


def between_class_loss(means: Tensor, counts: Tensor, eps: float = 1e-5) -> Tensor:
    """Long-tailed NC L_B (Liu et al. Eq. 15): minus the mean minimal pairwise angle.

    Means are centred by the mean of present means (``mu_C``); for each present class the largest
    cosine to any other present centred mean is taken, clamped to ``+-(1 - eps)`` so ``arccos``
    keeps a finite gradient, and ``-mean_k arccos(.)`` is returned. 0 with fewer than 2 present.
    """
    present = counts > 0
    weights = present.to(means.dtype)
    num_present = weights.sum()
    centre = (means * weights.unsqueeze(1)).sum(0) / num_present.clamp_min(1.0)
    unit = F.normalize(means - centre, dim=1)
    cos = unit @ unit.T
    pair_ok = present.unsqueeze(0) & present.unsqueeze(1)
    pair_ok &= ~torch.eye(means.shape[0], dtype=torch.bool, device=means.device)
    # -2 is below any cosine, so masked pairs never win the max and carry no gradient
    largest = cos.masked_fill(~pair_ok, -2.0).max(dim=1).values
    angle = torch.arccos(largest.clamp(-1.0 + eps, 1.0 - eps))
    if int(num_present.item()) < 2:
        return means.sum() * 0.0
    return -present_mean(angle, present)

