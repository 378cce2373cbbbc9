"""The optimised regularizer paths equal the implementations they replaced (kept here verbatim as
references): In2NeCT's L_intra (one N x N buffer, custom backward) and CeCo's class sums of the
projected, upsampled embedding (closed form through conv + BatchNorm, direct upsample adjoint).
Values and gradients on random inputs agree within 1e-5; BatchNorm running statistics too."""

import copy

import pytest
import torch
import torch.nn.functional as F

from rsseg.losses import CeCo, In2NeCT, intra_class_loss
from rsseg.losses.centers import conv_bn_class_sums, means_from_sums, upsample_class_weights
from rsseg.losses.collapse_terms import center_collapse_loss, present_reduce


def _previous_intra_class_loss(z, y, temperature=1.0, reduction="sum"):
    """L_intra as computed before the optimisation (autograd through five N x N tensors)."""
    n = z.shape[0]
    if n == 0:
        return z.sum() * 0.0
    classes, y = torch.unique(y, return_inverse=True)
    k = classes.numel()
    if k < 2:
        return z.sum() * 0.0
    sim = (z @ z.T) / temperature
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    onehot = F.one_hot(y, k).to(z.dtype)
    class_size = onehot.sum(0)
    others = class_size.unsqueeze(0) - onehot
    sim_off = sim.masked_fill(eye, float("-inf"))
    row_max = sim_off.max(dim=1, keepdim=True).values.detach()
    group = torch.exp(sim_off - row_max) @ onehot
    tiny = torch.finfo(z.dtype).tiny
    log_group = torch.log(group.clamp_min(tiny)) - torch.log(others.clamp_min(1.0))
    log_group = log_group.masked_fill(others == 0, float("-inf"))
    log_den = torch.logsumexp(log_group, dim=1) + row_max.squeeze(1)
    pos_count = others.gather(1, y.unsqueeze(1)).squeeze(1)
    pos_sum = (sim.masked_fill(eye, 0.0) @ onehot).gather(1, y.unsqueeze(1)).squeeze(1)
    anchor_loss = log_den - pos_sum / pos_count.clamp_min(1.0)
    has_pos = (pos_count > 0).to(z.dtype)
    per_class = (onehot * (anchor_loss * has_pos).unsqueeze(1)).sum(0) / class_size.clamp_min(1.0)
    return present_reduce(per_class, class_size >= 2, reduction)


def _previous_upsampled_class_sums(features, labels, num_classes, ignore_index=255):
    """CeCo's class sums as computed before: one-hot -> autograd adjoint of F.interpolate -> einsum."""
    b, _, h, w = features.shape
    big = tuple(labels.shape[-2:])
    y = labels.reshape(-1).long()
    y = torch.where(y == ignore_index, torch.full_like(y, num_classes), y)
    counts = torch.bincount(y, minlength=num_classes + 1)[:num_classes]
    onehot = F.one_hot(y.view(b, *big), num_classes + 1)[..., :num_classes].permute(0, 3, 1, 2).to(features.dtype)
    if big == (h, w):
        weights = onehot
    else:
        with torch.enable_grad():
            probe = torch.zeros(b, num_classes, h, w, dtype=features.dtype, requires_grad=True)
            up = F.interpolate(probe, size=big, mode="bilinear", align_corners=False)
            (weights,) = torch.autograd.grad(up, probe, grad_outputs=onehot)
    return torch.einsum("bchw,bkhw->kc", features, weights), counts


def _previous_ceco_terms(reg, embedding, labels):
    feats = reg.project(embedding.float())
    sums, counts = _previous_upsampled_class_sums(feats, labels, reg.num_classes, reg.ignore_index)
    if not bool((counts > 0).any()):
        return reg.zero(embedding, ["ceco"])
    centers = reg.head(means_from_sums(sums, counts))
    classifier = reg.etf if reg.classifier is None else reg.classifier
    return {"ceco": reg.weight * center_collapse_loss(centers, counts, classifier, reg.scale, reg.log_prior)}


def _value_and_grads(fn, x, params=()):
    x = x.detach().clone().requires_grad_(True)
    value = fn(x)
    grads = torch.autograd.grad(value, [x, *params], allow_unused=True)
    return value.detach(), [torch.zeros_like(p) if g is None else g for p, g in zip([x, *params], grads)]


def _assert_close(fast, slow, tol=1e-5):
    (v1, g1), (v2, g2) = fast, slow
    assert torch.allclose(v1, v2, rtol=tol, atol=tol), (v1, v2)
    # relative to the largest gradient entry of any input (a parameter whose gradient is 0 up to
    # rounding, e.g. behind a dead ReLU, gets float32 noise in one path and exact 0 in the other)
    largest = max(float(g.abs().max()) for g in g2 if g.numel())
    for a, b in zip(g1, g2):
        assert torch.isfinite(a).all()
        assert (a - b).abs().max() <= tol * largest, ((a - b).abs().max(), largest)


@pytest.mark.parametrize("temperature,reduction", [(1.0, "sum"), (0.1, "mean"), (0.05, "sum")])
@pytest.mark.parametrize("sizes", [(40, 25, 3, 1, 0, 12), (2, 0, 0, 0, 0, 0, 5), (30,), (1, 1)])
def test_intra_class_loss_equals_previous_implementation(temperature, reduction, sizes):
    g = torch.Generator().manual_seed(sum(sizes))
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    y = y[torch.randperm(y.numel(), generator=g)]
    z = F.normalize(torch.randn(y.numel(), 16, generator=g) + 0.5, dim=1)
    fast = _value_and_grads(lambda x: intra_class_loss(x, y, temperature, reduction, num_classes=len(sizes) + 1), z)
    compact = _value_and_grads(lambda x: intra_class_loss(x, y, temperature, reduction), z)
    slow = _value_and_grads(lambda x: _previous_intra_class_loss(x, y, temperature, reduction), z)
    _assert_close(fast, slow)
    _assert_close(compact, slow)


def test_intra_class_loss_custom_backward_passes_gradcheck():
    g = torch.Generator().manual_seed(3)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 0, 2])
    z = F.normalize(torch.randn(8, 5, generator=g, dtype=torch.float64), dim=1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: intra_class_loss(x, y, 0.5, "sum", num_classes=4), (z,))


def test_in2nect_module_equals_previous_intra_on_the_same_sample():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(2, 16, 12, 12, generator=g)
    labels = torch.randint(0, 5, (2, 48, 48), generator=g)
    labels[:, :6] = 255
    reg = In2NeCT(5, 16, pixels_per_class=20, generator=torch.Generator().manual_seed(1))

    def run(intra_fn):
        reg.generator = torch.Generator().manual_seed(2)  # same draw for both: the seeded stream
        from rsseg.losses import regularizers

        saved = regularizers.intra_class_loss
        regularizers.intra_class_loss = intra_fn
        try:
            return _value_and_grads(lambda x: sum(reg(x, labels).values()), emb)
        finally:
            regularizers.intra_class_loss = saved

    fast = run(intra_class_loss)
    slow = run(lambda z, y, t, r, k=None: _previous_intra_class_loss(z, y, t, r))
    _assert_close(fast, slow)


@pytest.mark.parametrize(
    "options",
    [{}, {"head_relu": True, "center_classifier": "learned"}, {"log_prior": torch.log(torch.tensor([0.4, 0.3, 0.2, 0.1]))}],
)
@pytest.mark.parametrize("grid", [(6, 6, 24, 24), (8, 8, 8, 8), (5, 7, 17, 30)])
def test_ceco_equals_previous_implementation_values_gradients_and_running_stats(options, grid):
    h, w, big_h, big_w = grid
    g = torch.Generator().manual_seed(h * w)
    emb = torch.randn(3, 12, h, w, generator=g) * 2.0 + 0.7  # a mean far from 0 tests the centred covariance
    labels = torch.randint(0, 4, (3, big_h, big_w), generator=g)
    labels[0, :3] = 255
    fast_reg = CeCo(4, 12, proj_dim=8, generator=torch.Generator().manual_seed(1), **options)
    slow_reg = copy.deepcopy(fast_reg)
    params_f, params_s = list(fast_reg.parameters()), list(slow_reg.parameters())
    for _ in range(2):  # the second call runs on updated running statistics
        fast = _value_and_grads(lambda x: fast_reg(x, labels)["ceco"], emb, params_f)
        slow = _value_and_grads(lambda x: _previous_ceco_terms(slow_reg, x, labels)["ceco"], emb, params_s)
        _assert_close(fast, slow)
        for (name, a), b in zip(fast_reg.named_buffers(), slow_reg.buffers()):
            assert torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-6), name
    fast_reg.eval()
    slow_reg.eval()
    _assert_close(
        _value_and_grads(lambda x: fast_reg(x, labels)["ceco"], emb, params_f),
        _value_and_grads(lambda x: _previous_ceco_terms(slow_reg, x, labels)["ceco"], emb, params_s),
    )


def test_conv_bn_class_sums_equals_projecting_then_summing_with_momentum_none():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 6, 5, 5, generator=g, dtype=torch.float64)
    conv = torch.nn.Conv2d(6, 4, 1, bias=False).double()
    bn = torch.nn.BatchNorm2d(4, momentum=None).double()
    ref_bn = copy.deepcopy(bn)
    weights, _ = upsample_class_weights(torch.randint(0, 3, (2, 15, 15), generator=g), (5, 5), 3, dtype=torch.float64)
    for _ in range(3):
        fast = conv_bn_class_sums(x, conv, bn, weights)
        slow = torch.einsum("bchw,bkhw->kc", ref_bn(conv(x)), weights)
        assert torch.allclose(fast, slow, atol=1e-10)
    assert torch.allclose(bn.running_var, ref_bn.running_var) and bn.num_batches_tracked == ref_bn.num_batches_tracked
    assert torch.allclose(bn.running_mean, ref_bn.running_mean)
