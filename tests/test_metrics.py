"""rsseg.metrics: confusion matrix and scores on hand-computed examples, collapse diagnostics on
constructed geometries and against direct formulas, imbalance summaries."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from rsseg.errors import LabelError, RsSegError
from rsseg.losses import labels_to_embedding, simplex_etf
from rsseg.metrics import (
    CollapseStats,
    ConfusionAccumulator,
    confusion_matrix,
    frequency_accuracy_correlation,
    head_common_tail,
    imbalance_factors,
    segmentation_scores,
)

REF = [[0, 0, 1, 255], [2, 2, 2, 1], [0, 1, 1, 3]]
PRED = [[0, 1, 1, 2], [2, 0, 2, 1], [0, 1, 2, 2]]
# by hand (rows reference, columns prediction), the 255 pixel skipped:
HAND = [[2, 1, 0, 0], [0, 3, 1, 0], [1, 0, 2, 0], [0, 0, 1, 0]]


def test_confusion_matrix_by_hand_torch_and_numpy():
    conf = confusion_matrix(torch.tensor(PRED), torch.tensor(REF), 4)
    assert conf.dtype == torch.int64 and conf.tolist() == HAND
    assert confusion_matrix(np.array(PRED, np.uint8), np.array(REF, np.uint8), 4).tolist() == HAND


def test_confusion_matrix_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(torch.zeros(2, 2), torch.zeros(2, 3), 2)
    with pytest.raises(RsSegError, match="reference"):
        confusion_matrix(torch.zeros(4), torch.tensor([0, 1, 7, 255]), 2)
    with pytest.raises(RsSegError, match="prediction"):
        confusion_matrix(torch.tensor([0, 5]), torch.tensor([0, 1]), 2)


def test_confusion_torch_and_accumulator_share_one_definition():
    """Training's on-device matrix and the raster scorer count the same pixels and refuse the same
    values with the same messages (the values named, a prediction >= K never counted as a class)."""
    acc = ConfusionAccumulator(4, prediction_nodata=None)
    acc.update(np.array(PRED, np.uint8), np.array(REF, np.uint8))
    assert acc.conf.tolist() == confusion_matrix(torch.tensor(PRED), torch.tensor(REF), 4).tolist() == HAND
    for pred, ref, message in (([0, 1], [0, 7], r"reference holds values \[7\] outside the 2 classes"),
                               ([0, 5], [0, 1], r"prediction holds class ids \[5\] but only 2 classes")):
        with pytest.raises(LabelError, match=message):
            confusion_matrix(torch.tensor(pred), torch.tensor(ref), 2)
        with pytest.raises(LabelError, match=message):
            ConfusionAccumulator(2, prediction_nodata=None).update(np.array(pred), np.array(ref))
    # a prediction on an ignored reference pixel is not scored, whatever it is
    assert confusion_matrix(torch.tensor([1, 9]), torch.tensor([1, 255]), 2).tolist() == [[0, 0], [0, 1]]


def test_scoring_imports_no_torch():
    """Scoring a raster with the ONNX engine must not load torch (hundreds of MB)."""
    code = "import sys, rsseg.inference.scoring, rsseg.metrics.segmentation; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "False"


def test_segmentation_scores_by_hand():
    names = ["a", "b", "c", "clutter"]
    s = segmentation_scores(torch.tensor(HAND), names, exclude=[3])
    # tp = [2, 3, 2, 0]; fp = col - tp = [1, 1, 2, 0]; fn = row - tp = [1, 1, 1, 1]
    assert s["oa"] == pytest.approx(7 / 11)  # OA over all classes, clutter included
    iou = [2 / 4, 3 / 5, 2 / 5, 0.0]
    f1 = [4 / 6, 6 / 8, 4 / 7, 0.0]
    for name, i, f in zip(names, iou, f1):
        assert s["per_class"][name]["iou"] == pytest.approx(i)
        assert s["per_class"][name]["f1"] == pytest.approx(f)
    assert s["per_class"]["a"]["precision"] == pytest.approx(2 / 3)
    assert s["per_class"]["b"]["recall"] == pytest.approx(3 / 4)
    assert s["per_class"]["clutter"]["support"] == 1
    assert math.isnan(s["per_class"]["clutter"]["precision"])  # never predicted
    assert s["miou"] == pytest.approx(np.mean(iou[:3]))  # clutter excluded from the means
    assert s["mf1"] == pytest.approx(np.mean(f1[:3]))
    assert segmentation_scores(torch.tensor(HAND), names)["miou"] == pytest.approx(np.mean(iou))


def test_segmentation_scores_leave_absent_classes_out_of_the_means():
    conf = np.array([[5, 1, 0], [2, 4, 0], [0, 0, 0]])  # class 2 absent from reference and prediction
    s = segmentation_scores(conf, ["x", "y", "z"])
    assert math.isnan(s["per_class"]["z"]["iou"])
    assert s["miou"] == pytest.approx(np.mean([5 / 8, 4 / 7]))
    with pytest.raises(RsSegError, match="empty"):
        segmentation_scores(np.zeros((2, 2)), ["x", "y"])
    with pytest.raises(ValueError):
        segmentation_scores(conf, ["x", "y"])


def test_head_common_tail_terciles():
    assert head_common_tail([0.5, 0.01, 0.2, 0.03, 0.1, 0.15, 0.01]) == [
        "head", "tail", "head", "common", "common", "head", "tail",
    ]


def _etf_embedding(k, d, n_per_class, noise, seed):
    g = torch.Generator().manual_seed(seed)
    etf = simplex_etf(k, d, g).double()
    labels = torch.arange(k).repeat_interleave(n_per_class)
    z = etf[labels] + noise * torch.randn(labels.numel(), d, generator=g, dtype=torch.float64)
    return etf, z.T.reshape(1, d, 1, -1), labels.view(1, 1, -1)


def test_collapse_stats_are_zero_on_a_perfect_etf():
    etf, emb, labels = _etf_embedding(5, 8, 10, 0.0, 0)
    stats = CollapseStats(5, 8)
    stats.update(emb, labels)
    out = stats.compute(classifier_weight=3.0 * etf)
    for key in ("nc1", "equinorm", "equiangularity", "delta_inter", "delta_intra", "delta_intra_unit", "nc3",
                "w_equiangularity", "w_equinorm", "w_max_angle"):
        assert abs(out[key]) < 1e-6, (key, out)  # the ETF is float32


def test_collapse_stats_match_direct_formulas_and_exclude_absent_classes():
    k, d = 4, 6
    _, emb, labels = _etf_embedding(k, d, 30, 0.3, 1)
    labels = labels.clone()
    labels[0, 0, :30] = 255  # class 0 ignored entirely -> absent
    labels[0, 0, 30:40] = 255  # class 1 smaller than the others: pixel mean != mean of class means
    stats = CollapseStats(k + 1, d)  # class 4 never appears
    stats.update(emb[..., :50], labels[..., :50])  # two updates accumulate like one
    stats.update(emb[..., 50:], labels[..., 50:])
    out = stats.compute()
    assert out["num_classes_present"] == 3

    z = emb[0, :, 0].T.numpy()
    y = labels[0, 0].numpy()
    present = [1, 2, 3]
    mus = np.stack([z[y == c].mean(0) for c in present])
    centred = mus - z[y != 255].mean(0)  # centred on the global pixel mean (In2NeCT, CeCo)
    sw = np.mean([np.cov(z[y == c].T, bias=True) for c in present], axis=0)
    sb = centred.T @ centred / 3
    assert out["nc1"] == pytest.approx(np.trace(sw @ np.linalg.pinv(sb)) / 3, rel=1e-6)
    norms = np.linalg.norm(centred, axis=1)
    assert out["equinorm"] == pytest.approx(norms.std() / norms.mean())
    unit = centred / norms[:, None]
    cos = (unit @ unit.T)[~np.eye(3, dtype=bool)]
    assert out["equiangularity"] == pytest.approx(cos.std())
    assert out["delta_inter"] == pytest.approx(np.abs(cos + 1 / 2).mean())
    assert out["delta_intra"] == pytest.approx(
        np.mean([np.mean(np.sum((z[y == c] - z[y == c].mean(0)) ** 2, axis=1)) for c in present])
    )
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    assert out["delta_intra_unit"] == pytest.approx(
        np.mean([np.trace(np.cov(zn[y == c].T, bias=True)) for c in present])
    )
    w = np.random.default_rng(0).normal(size=(k + 1, d))
    out = stats.compute(torch.from_numpy(w))
    wp = w[present]
    assert out["nc3"] == pytest.approx(
        np.sum((wp / np.linalg.norm(wp) - centred / np.linalg.norm(centred)) ** 2)
    )
    wn = wp / np.linalg.norm(wp, axis=1, keepdims=True)
    wcos = (wn @ wn.T)[~np.eye(3, dtype=bool)]
    assert out["w_equiangularity"] == pytest.approx(wcos.std())
    assert out["w_max_angle"] == pytest.approx(np.abs(wcos + 1 / 2).mean())


def test_collapse_stats_take_full_resolution_labels():
    emb = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 16, 16))
    a, b = CollapseStats(3, 3), CollapseStats(3, 3)
    a.update(emb, labels)
    b.update(emb, labels_to_embedding(labels, (4, 4)))
    assert a.compute() == b.compute()
    single = CollapseStats(3, 3)
    single.update(emb, torch.zeros(2, 4, 4, dtype=torch.long))
    assert math.isnan(single.compute()["delta_inter"])
    with pytest.raises(ValueError):
        CollapseStats(3, 3).compute()


def test_imbalance_factors_and_correlation():
    f = imbalance_factors([1000, 10, 0, 100], [50, 5, 0, 20], center_counts=[40, 8, 0, 20])
    assert f == {"pixel": 100.0, "region": 10.0, "center": 5.0}
    acc = [0.9, 0.2, 0.6, float("nan"), 0.7]
    freq = [0.5, 0.01, 0.1, 0.3, 0.2]
    expected = np.corrcoef([0.9, 0.2, 0.6, 0.7], [0.5, 0.01, 0.1, 0.2])[0, 1]
    assert frequency_accuracy_correlation(acc, freq) == pytest.approx(expected)
    assert math.isnan(frequency_accuracy_correlation([0.5, 0.5], [0.1, 0.9]))
    with pytest.raises(RsSegError):
        frequency_accuracy_correlation([0.1], [0.1, 0.2])
    with pytest.raises(RsSegError):
        imbalance_factors([0, 0], [1, 1])


def test_default_exclusions_follow_the_benchmark_conventions():
    from rsseg.metrics import default_exclusions

    isprs = ["impervious_surfaces", "building", "low_vegetation", "tree", "car", "clutter"]
    assert default_exclusions("potsdam", isprs) == [5] and default_exclusions("vaihingen", isprs) == [5]
    assert default_exclusions("loveda", ["background", "building", "clutter"]) == []
    assert default_exclusions(None, isprs) == [] and default_exclusions("potsdam", isprs[:5]) == []


def test_collapse_diagnostics_measure_the_classifier_input():
    """What `rsseg evaluate -m` reports: the model's own embedding and classifier weights."""
    import dataclasses

    from rsseg.config import ModelConfig
    from rsseg.metrics.collapse import collapse_diagnostics
    from rsseg.models import build_model

    torch.manual_seed(0)
    model = build_model(dataclasses.replace(ModelConfig(), embed_dim=16), num_classes=3, in_channels=3)
    image = torch.randn(3, 64, 96)
    mask = torch.randint(0, 3, (64, 96))
    out = collapse_diagnostics(model, [{"image": image, "mask": mask}], 3, window=64)
    model.eval()
    stats = CollapseStats(3, 16)
    with torch.no_grad():
        for x0 in (0, 64):
            _, emb = model.forward_with_embedding(image[None, :, :, x0 : x0 + 64])
            stats.update(emb, mask[None, :, x0 : x0 + 64])
    assert out == pytest.approx(stats.compute(model.classifier_weight))
    assert {"nc1", "delta_inter", "delta_intra", "nc3", "w_equiangularity"} <= set(out)
