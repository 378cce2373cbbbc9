"""The study's science options and machinery: centred L_inter, reductions as the equations write them,
class weights, bit-identical runs with one seed, k-fold tile splits and bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rsseg.data.folds import kfold_split
from rsseg.losses import (
    SegmentationLoss,
    build_regularizers,
    center_collapse_loss,
    centre_means,
    inter_class_loss,
    median_frequency_weights,
    simplex_etf,
    within_class_loss,
)
from rsseg.metrics.intervals import bootstrap_ci
from rsseg.models import build_model
from rsseg.runconfig import training_config


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_centred_inter_loss_subtracts_the_pixel_weighted_global_mean():
    k, d = 5, 8
    means = torch.randn(k, d, generator=_gen(0), dtype=torch.float64)
    counts = torch.tensor([10, 0, 3, 7, 1])
    etf = simplex_etf(k, d, _gen(1)).double()
    glob = (means * counts[:, None]).sum(0) / counts.sum()
    assert torch.allclose(centre_means(means, counts), means - glob)
    assert torch.allclose(inter_class_loss(means, counts, etf, centre=True), inter_class_loss(means - glob, counts, etf))
    # a shared offset (e.g. the non-negative features' common direction) changes the raw loss, never the centred one
    shifted = means + torch.randn(1, d, generator=_gen(2), dtype=torch.float64) * 10
    assert torch.allclose(inter_class_loss(shifted, counts, etf, centre=True), inter_class_loss(means, counts, etf, centre=True))
    assert not torch.allclose(inter_class_loss(shifted, counts, etf), inter_class_loss(means, counts, etf))


def test_centred_means_reach_the_etf_where_raw_means_of_non_negative_features_cannot():
    k, d = 4, 6
    etf = simplex_etf(k, d, _gen(3)).double()
    counts = torch.ones(k, dtype=torch.long)
    raw = etf + 2.0  # class means of non-negative features: an ETF shifted off the origin
    assert inter_class_loss(raw, counts, etf, centre=True) < inter_class_loss(raw, counts, etf) - 0.1
    assert torch.allclose(inter_class_loss(raw, counts, etf, centre=True), inter_class_loss(etf, counts, etf))


def test_unnormalised_inter_loss_is_eq5_raw_dot_product():
    k, d = 4, 6
    means = torch.randn(k, d, generator=_gen(4), dtype=torch.float64)
    counts = torch.tensor([1, 2, 3, 4])
    etf = simplex_etf(k, d, _gen(5)).double()
    expected = F.cross_entropy(means @ etf.T, torch.arange(k), reduction="sum")
    assert torch.allclose(inter_class_loss(means, counts, etf, scale=1.0, normalize=False), expected)


@pytest.mark.parametrize("fn", ["inter", "ceco", "within"])
def test_every_class_term_sums_as_written_and_mean_divides_by_the_present_classes(fn):
    k, d = 5, 6
    means = torch.randn(k, d, generator=_gen(6), dtype=torch.float64)
    counts = torch.tensor([3, 0, 2, 8, 1])  # 4 present classes
    etf = simplex_etf(k, d, _gen(7)).double()
    if fn == "within":
        z = torch.randn(14, d, generator=_gen(8), dtype=torch.float64)
        labels = torch.tensor([0, 0, 0, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 4])
        means = torch.stack([z[labels == c].mean(0) if (labels == c).any() else torch.zeros(d, dtype=z.dtype) for c in range(k)])
        total, mean = (within_class_loss(z, labels, means, counts, reduction=r) for r in ("sum", "mean"))
    elif fn == "ceco":
        total, mean = (center_collapse_loss(means, counts, etf, reduction=r) for r in ("sum", "mean"))
    else:
        total, mean = (inter_class_loss(means, counts, etf, reduction=r) for r in ("sum", "mean"))
    assert torch.allclose(total, 4 * mean)


def test_bundled_configs_follow_the_equations_reductions():
    for dataset in ("loveda", "potsdam", "vaihingen", "folder", "geo", "torchgeo"):
        regs = training_config(dataset=dataset, regularizers=["in2nect", "ceco", "nc"]).loss.regularizers
        assert (regs.in2nect.reduction, regs.ceco.reduction, regs.nc.reduction) == ("sum", "sum", "sum"), dataset
        assert regs.in2nect.temperature == 1.0 and regs.ceco.use_prior is False, dataset


def test_median_frequency_weights_and_weighted_cross_entropy():
    w = median_frequency_weights([0.5, 0.25, 0.25, 0.0])
    assert torch.allclose(w, torch.tensor([0.5, 1.0, 1.0, 1.0]))
    loss = SegmentationLoss(2, mode="ce", label_smoothing=0.0, aux_weight=0.0, class_weights=torch.tensor([1.0, 3.0]))
    logits = torch.randn(1, 2, 4, 4, generator=_gen(9))
    labels = torch.randint(0, 2, (1, 4, 4), generator=_gen(10))
    expected = F.cross_entropy(logits, labels, weight=torch.tensor([1.0, 3.0]))
    assert torch.allclose(loss(logits, labels)["ce"], expected)
    with pytest.raises(ValueError, match="positive"):
        SegmentationLoss(2, class_weights=torch.tensor([1.0, 0.0]))


@pytest.mark.parametrize("regularizer", ["in2nect", "nc"])  # nc failed here before rows were gathered with index_select
def test_runs_with_one_seed_are_bit_identical_on_two_threads(regularizer):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        def run() -> torch.Tensor:
            torch.manual_seed(0)
            cfg = training_config(dataset="loveda", regularizers=[regularizer], overrides=["model.decode_channels=16",
                                                                                      "model.embed_dim=16",
                                                                                      "model.pretrained=false"])
            model = build_model(cfg.model, num_classes=7, in_channels=3)
            regs = build_regularizers(cfg.loss.regularizers, 7, cfg.model.embed_dim,
                                      log_region_prior=torch.zeros(7), seed=0)
            seg = SegmentationLoss(7)
            opt = torch.optim.AdamW([*model.parameters(), *regs.parameters()], 1e-3)
            g = _gen(1)
            for _ in range(2):
                x = torch.randn(4, 3, 128, 128, generator=g)
                y = torch.randint(0, 7, (4, 128, 128), generator=g)
                out = model(x)
                terms = seg(out["logits"], y, out.get("aux"))
                for reg in regs.values():
                    terms.update(reg(out["embedding"], y))
                opt.zero_grad()
                sum(terms.values()).backward()
                opt.step()
            return torch.cat([p.detach().flatten() for p in model.parameters()])

        assert torch.equal(run(), run())
    finally:
        torch.set_num_threads(threads)


def test_kfold_split_puts_every_tile_in_exactly_one_fold_and_spreads_the_rare_ones():
    names = [f"t{i:02d}" for i in range(28)]
    rare = [1.0 if i in (3, 7, 11, 15, 19, 23, 25, 27) else 0.0 for i in range(28)]
    folds = kfold_split(names, 4, [(r, i / 100) for i, r in enumerate(rare)])
    assert sorted(n for f in folds for n in f) == names
    assert [len(f) for f in folds] == [7, 7, 7, 7]
    assert [sum(rare[names.index(n)] for n in f) for f in folds] == [2, 2, 2, 2]
    assert kfold_split(names, 4, [(r, i / 100) for i, r in enumerate(rare)]) == folds  # deterministic
    assert sorted(n for f in kfold_split(names[:10], 3) for n in f) == names[:10]
    with pytest.raises(ValueError, match="unique"):
        kfold_split(["a", "a", "b"], 2)
    with pytest.raises(ValueError, match="fill"):
        kfold_split(["a"], 2)


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_more_units():
    rng = np.random.default_rng(0)
    small = rng.normal(1.0, 1.0, 10)
    large = rng.normal(1.0, 1.0, 1000)
    m, lo, hi = bootstrap_ci(small)
    assert lo < m < hi and m == pytest.approx(small.mean())
    m2, lo2, hi2 = bootstrap_ci(large)
    assert lo2 < 1.0 < hi2 and (hi2 - lo2) < (hi - lo) / 5
    # the normal-theory interval of a large sample: mean +- 1.96 sd / sqrt(n)
    half = 1.96 * large.std(ddof=1) / np.sqrt(large.size)
    assert hi2 - lo2 == pytest.approx(2 * half, rel=0.1)
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    assert bootstrap_ci([float("nan"), 1.0, 3.0])[0] == 2.0
    assert all(v != v for v in bootstrap_ci([float("nan")]))
    assert bootstrap_ci(small, seed=3) == bootstrap_ci(small, seed=3)
