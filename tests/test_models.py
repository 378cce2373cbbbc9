"""rsseg.models: UNetFormer (Wang et al., ISPRS JPRS 2022) shapes, size, training contract, export."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models import adapt_input_conv

from rsseg.config import ModelConfig
from rsseg.errors import RsSegError
from rsseg.models import UNetFormer, build_model, export_onnx
from rsseg.models.attention import GlobalLocalAttention
from rsseg.models.layers import _reflect_gather, reflect_pad_to

K = 6


def _build(bands: int = 3, seed: int = 0, **overrides) -> UNetFormer:
    torch.manual_seed(seed)
    return build_model(dataclasses.replace(ModelConfig(), **overrides), num_classes=K, in_channels=bands)


def _count(model: UNetFormer) -> int:
    # the signed projection (64 x 64, ours) is part of the inference model and counted
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def rgb_model() -> UNetFormer:
    return _build(3)


@pytest.fixture(scope="module")
def four_band_model() -> UNetFormer:
    return _build(4, seed=1)


@pytest.mark.parametrize(("bands", "shape"), [(3, (1, 64, 64)), (3, (2, 100, 77)), (4, (2, 33, 70))])
def test_output_shapes(rgb_model: UNetFormer, four_band_model: UNetFormer, bands: int, shape: tuple) -> None:
    model = rgb_model if bands == 3 else four_band_model
    batch, height, width = shape
    x = torch.randn(batch, bands, height, width)
    model.eval()
    with torch.inference_mode():
        logits = model(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (batch, K, height, width)
    model.train()
    try:
        out = model(x)
    finally:
        model.eval()
    assert set(out) == {"logits", "aux", "embedding"}
    assert out["logits"].shape == out["aux"].shape == (batch, K, height, width)
    assert model.embedding_stride == 4
    assert out["embedding"].shape == (batch, model.embed_dim, -(-height // 4), -(-width // 4))


def test_no_aux_head_and_embed_dim() -> None:
    model = _build(3, aux_head=False, embed_dim=32).train()
    out = model(torch.randn(2, 3, 64, 64))
    assert set(out) == {"logits", "embedding"} and out["embedding"].shape == (2, 32, 16, 16)
    assert model.embed_dim == 32


@pytest.mark.parametrize(("aux", "reference"), [(False, 11.69e6), (True, 11.73e6)])
def test_parameter_count_matches_paper(aux: bool, reference: float) -> None:
    count = _count(_build(3, aux_head=aux))
    assert abs(count - reference) / reference < 0.01, count


@pytest.mark.parametrize("shape", [(2, 64, 96), (1, 128, 64)])
def test_embedding_is_the_classifier_input(shape: tuple) -> None:
    """DESIGN.md contract: eval logits == upsample(classify(embedding)) and the embedding is signed."""
    model = _build(3, seed=3).eval()
    batch, height, width = shape
    x = torch.randn(batch, 3, height, width)
    with torch.no_grad():
        logits, embedding = model.forward_with_embedding(x)
        plain = model(x)
        rebuilt = F.interpolate(model.classify(embedding), size=(height, width), mode="bilinear", align_corners=False)
    torch.testing.assert_close(logits, plain)
    torch.testing.assert_close(rebuilt, plain, atol=1e-5, rtol=1e-5)
    assert embedding.shape == (batch, model.embed_dim, height // 4, width // 4)
    assert float(embedding.min()) < 0 < float(embedding.max())  # signed: class means can form an ETF
    assert model.classifier_weight.shape == (K, model.embed_dim)
    # the embedding drives the prediction: changing it changes the logits
    model.projection.weight.data.mul_(-1.0)
    with torch.no_grad():
        assert not torch.allclose(model(x), plain)
    model.projection.weight.data.mul_(-1.0)
    # training: the embedding returned is the one the classifier reads (dropout is not in-place)
    model.train()
    out = model(x)
    with torch.no_grad():
        model.eval()
        _, again = model.forward_with_embedding(x)
    assert out["embedding"].shape == again.shape
    # gradient of a loss on the embedding reaches the projection (no side branch)
    out["embedding"].pow(2).mean().backward()
    assert model.projection.weight.grad is not None and model.projection.weight.grad.abs().sum() > 0


def test_eval_is_deterministic_and_batch_independent(rgb_model: UNetFormer) -> None:
    rgb_model.eval()
    x = torch.randn(3, 3, 80, 72)
    with torch.inference_mode():
        a, b = rgb_model(x), rgb_model(x)
        single = rgb_model(x[1:2])
    assert torch.equal(a, b)
    # windows are cut per image: a bad reshape would mix samples of the batch
    torch.testing.assert_close(a[1:2], single, atol=1e-5, rtol=1e-5)


def test_gradient_reaches_every_parameter() -> None:
    model = _build(4).train()
    for module in model.modules():
        # timm zero-initialises the last BN of each residual block, which blocks the gradient to the
        # block's convs until the first update; give BN the non-zero scale a trained model has
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
    x = torch.randn(2, 4, 64, 64)
    target = torch.randint(0, K, (2, 64, 64))
    out = model(x)
    emb = out["embedding"]
    loss = F.cross_entropy(out["logits"], target) + 0.4 * F.cross_entropy(out["aux"], target) + emb.pow(2).mean()
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not dead, dead


def test_embedding_is_signed_and_taken_before_dropout(rgb_model: UNetFormer) -> None:
    taps: list[torch.Tensor] = []
    handle = rgb_model.head.feature.register_forward_hook(lambda m, i, o: taps.append(o.detach().clone()))
    x = torch.randn(2, 3, 64, 64)
    rgb_model.train()
    try:
        torch.manual_seed(1)
        first = rgb_model(x)
        torch.manual_seed(2)
        second = rgb_model(x)
    finally:
        rgb_model.eval()
        handle.remove()
    # train-mode BatchNorm normalises with batch statistics, so only dropout differs between runs
    assert not torch.allclose(first["logits"], second["logits"])
    torch.testing.assert_close(first["embedding"], second["embedding"])
    assert taps[0].min() >= 0  # ReLU6 classifier input: cannot form a simplex ETF
    torch.testing.assert_close(first["embedding"], rgb_model.projection(taps[0]).detach())
    assert first["embedding"].min() < 0 < first["embedding"].max()


def test_window_attention_matches_per_window_loop() -> None:
    torch.manual_seed(0)
    ws, heads, dim = 4, 2, 8
    gla = GlobalLocalAttention(dim, heads, ws).eval()
    torch.nn.init.normal_(gla.relative_position_bias_table, std=1.0)
    x = torch.randn(2, dim, 8, 12)
    with torch.no_grad():
        got = gla.window_attention(x)
        q, k, v = gla.qkv(x).chunk(3, dim=1)
        expected = torch.empty_like(x)
        coords = [(r, c) for r in range(ws) for c in range(ws)]
        bias = torch.empty(heads, ws * ws, ws * ws)
        for i, (r1, c1) in enumerate(coords):
            for j, (r2, c2) in enumerate(coords):
                bias[:, i, j] = gla.relative_position_bias_table[(r1 - r2 + ws - 1) * (2 * ws - 1) + (c1 - c2 + ws - 1)]
        for r in range(0, 8, ws):
            for c in range(0, 12, ws):
                def tokens(t: torch.Tensor, r: int = r, c: int = c) -> torch.Tensor:  # [B, heads, ws*ws, head_dim]
                    return t[:, :, r : r + ws, c : c + ws].reshape(2, heads, dim // heads, ws * ws).transpose(2, 3)

                attn = (tokens(q) @ tokens(k).transpose(2, 3) * (dim // heads) ** -0.5 + bias).softmax(-1)
                win = (attn @ tokens(v)).transpose(2, 3).reshape(2, dim, ws, ws)
                expected[:, :, r : r + ws, c : c + ws] = win
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("size", "target"), [((4, 5), (6, 8)), ((3, 2), (9, 7)), ((1, 3), (3, 10)), ((5, 5), (5, 5))])
def test_reflect_pad_to_any_amount(size: tuple[int, int], target: tuple[int, int]) -> None:
    x = torch.arange(float(size[0] * size[1])).reshape(1, 1, *size)
    padded = reflect_pad_to(x, *target)
    # eager native pads and the export-time gather must agree
    torch.testing.assert_close(padded, _reflect_gather(x, *target))
    if target[0] - size[0] < size[0] and target[1] - size[1] < size[1]:
        torch.testing.assert_close(padded, F.pad(x, (0, target[1] - size[1], 0, target[0] - size[0]), mode="reflect"))
    if size == (3, 2):
        assert padded[0, 0, :, 0].tolist() == [0, 2, 4, 2, 0, 2, 4, 2, 0]
    if size[0] == 1:
        assert padded[0, 0, :, 0].eq(0).all()


def test_autocast_bf16_and_channels_last(rgb_model: UNetFormer) -> None:
    rgb_model.eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        ref = rgb_model(x)
        cl = rgb_model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = rgb_model(x)
    rgb_model.to(memory_format=torch.contiguous_format)
    torch.testing.assert_close(cl, ref, atol=1e-4, rtol=1e-4)
    assert low.shape == ref.shape and torch.isfinite(low).all()
    assert (low.float().argmax(1) == ref.argmax(1)).float().mean() > 0.8


def test_parameter_groups_partition_the_model(rgb_model: UNetFormer) -> None:
    backbone = {id(p) for p in rgb_model.backbone_parameters()}
    decoder = {id(p) for p in rgb_model.decoder_parameters()}
    assert backbone == {id(p) for p in rgb_model.encoder.parameters()}
    assert not backbone & decoder and backbone | decoder == {id(p) for p in rgb_model.parameters()}
    assert id(rgb_model.projection.weight) in decoder


@pytest.mark.parametrize(("bands", "suffix"), [(3, ".pth"), (4, ".safetensors")])
def test_local_encoder_weights_arrive(tmp_path, bands: int, suffix: str) -> None:
    torch.manual_seed(123)
    source = timm.create_model("resnet18")  # classifier head included, as a user's file would be
    state = source.state_dict()
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    model = _build(bands, seed=7, weights=str(path))
    encoder = model.encoder.state_dict()
    torch.testing.assert_close(encoder["layer4.1.conv2.weight"], state["layer4.1.conv2.weight"])
    torch.testing.assert_close(encoder["bn1.running_var"], state["bn1.running_var"])
    torch.testing.assert_close(encoder["conv1.weight"], adapt_input_conv(bands, state["conv1.weight"]))
    assert encoder["conv1.weight"].shape[1] == bands


def test_bad_weights_and_inputs_raise_clear_errors(tmp_path, rgb_model: UNetFormer) -> None:
    with pytest.raises(RsSegError, match="not found"):
        _build(3, weights=str(tmp_path / "missing.pth"))
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, wrong)
    with pytest.raises(RsSegError, match="lack"):
        _build(3, weights=str(wrong))
    with pytest.raises(RsSegError, match="unknown encoder"):
        _build(3, encoder="resnet_does_not_exist")
    with pytest.raises(RsSegError, match="window_size"):
        _build(3, window_size=7)
    with pytest.raises(ValueError, match="4 bands|3 bands"):  # internal shape check: plain ValueError
        rgb_model.eval()(torch.randn(1, 4, 64, 64))


def test_pretrained_download_failure_is_a_user_error(monkeypatch) -> None:
    real = timm.create_model

    def offline(*args, **kwargs):
        if kwargs.get("pretrained"):
            raise ConnectionError("no network")
        return real(*args, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(RsSegError, match="model.weights"):
        _build(3, pretrained=True)


def test_four_stage_encoder_pyramid() -> None:
    model = _build(3, encoder="convnext_atto").eval()
    assert tuple(model.encoder.feature_info.reduction()) == (4, 8, 16, 32)
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 64, 48)).shape == (1, K, 64, 48)


def _onnx_parity(model: UNetFormer, path, shapes: list[tuple[int, ...]]) -> None:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    assert names == ["logits"]  # lean graph: no aux, no embedding
    for shape in shapes:
        x = torch.randn(*shape)
        with torch.inference_mode():
            expected = model(x).numpy()
        got = session.run(None, {"image": x.numpy()})[0]
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.slow  # ~26 s: an ONNX export and two ONNX Runtime runs
def test_onnx_export_matches_pytorch(tmp_path, four_band_model: UNetFormer) -> None:
    four_band_model.train()  # export must use the inference graph and restore the mode
    path = export_onnx(four_band_model, tmp_path / "model.onnx", in_channels=4, height=64, width=64, dynamic=False)
    assert four_band_model.training and path.is_file()
    assert not list(tmp_path.glob(".*part*"))  # atomic: no temporary file left behind
    four_band_model.eval()
    _onnx_parity(four_band_model, path, [(1, 4, 64, 64), (3, 4, 64, 64)])


@pytest.mark.slow
@pytest.mark.timeout(2400)  # ~110 s on an idle 2-core machine; past 600 s on a loaded one
def test_onnx_export_dynamic_sizes(tmp_path, rgb_model: UNetFormer) -> None:
    path = export_onnx(rgb_model, tmp_path / "model.onnx", in_channels=3, height=256, width=256)
    rgb_model.eval()
    _onnx_parity(rgb_model, path, [(1, 3, 256, 256), (2, 3, 100, 77), (1, 3, 320, 288)])


def test_checkpoints_of_the_old_side_branch_format_are_refused():
    """/1 checkpoints load with the same shapes, but their classifier never read the projection:
    refused in one line rather than predicting garbage."""
    from rsseg.checkpoint import FORMAT, ModelMeta
    from rsseg.errors import CheckpointError

    meta = ModelMeta(classes=["a", "b"], colors=["#000000", "#ffffff"], bands=["r", "g", "b"], mean=[0.5] * 3,
                     std=[0.2] * 3).to_dict()
    assert ModelMeta.from_dict(meta).format == FORMAT == "rsseg-checkpoint/2"
    for old in ({**meta, "format": "rsseg-checkpoint/1"}, {k: v for k, v in meta.items() if k != "format"}):
        with pytest.raises(CheckpointError, match="older rsseg.*re-train"):
            ModelMeta.from_dict(old)
