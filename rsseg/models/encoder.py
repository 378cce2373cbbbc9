"""timm ``features_only`` encoders for UNetFormer, with online or offline (local file) weights.

UNetFormer (Wang et al., ISPRS JPRS 2022) uses an ImageNet ResNet-18; any timm CNN whose feature
pyramid has strides 4, 8, 16 and 32 works. Channels are read from ``feature_info``.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from timm.models import adapt_input_conv
from torch import nn

from rsseg.errors import CheckpointError, CheckpointNotFoundError, ConfigError, RsSegError
from rsseg.io import load_torch_file

STRIDES = (4, 8, 16, 32)
# 5-stage CNNs (ResNet, EfficientNet, RegNet) have the stride-2 stem at index 0; 4-stage models
# (ConvNeXt) start at stride 4
_OUT_INDICES = ((1, 2, 3, 4), (0, 1, 2, 3))


def create_encoder(name: str, in_channels: int, pretrained: bool = False, weights: str | Path | None = None) -> nn.Module:
    """A timm feature extractor returning four maps at strides 4-32 for [B, in_channels, H, W] input.

    ``weights`` (a local ``.pth``/``.pt``/``.safetensors`` state dict of the timm model ``name``)
    takes precedence over ``pretrained`` (timm download). For ``in_channels != 3`` the first
    convolution of either is adapted by timm's ``adapt_input_conv`` (RGB filters repeated and
    rescaled).
    """
    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:5]
        hint = f" (close matches: {', '.join(close)})" if close else ""
        raise ConfigError(f"unknown encoder {name!r}{hint}; set model.encoder to a timm model name such as resnet18")
    out_indices = _pyramid_indices(name, in_channels)
    if pretrained and weights is None:
        try:
            return timm.create_model(
                name, features_only=True, out_indices=out_indices, in_chans=in_channels, pretrained=True
            )
        except Exception as exc:  # noqa: BLE001 - download/hub failures come in many types
            raise RsSegError(
                f"cannot download pretrained weights for encoder {name!r}: {exc.__class__.__name__}: "
                f"{str(exc).splitlines()[0][:200] if str(exc) else ''} "
                "(check the network, or set model.weights to a local weights file)"
            ) from exc
    encoder = timm.create_model(name, features_only=True, out_indices=out_indices, in_chans=in_channels)
    if weights is not None:
        load_encoder_weights(encoder, weights, name)
    return encoder


def _pyramid_indices(name: str, in_channels: int) -> tuple[int, ...]:
    errors = []
    for out_indices in _OUT_INDICES:
        try:
            probe = timm.create_model(name, features_only=True, out_indices=out_indices, in_chans=in_channels)
        except Exception as exc:  # noqa: BLE001 - timm raises assorted types for a bad index
            errors.append(f"{exc.__class__.__name__}: {exc}")
            continue
        if tuple(probe.feature_info.reduction()) == STRIDES:
            return out_indices
        errors.append(f"out_indices {out_indices} give strides {tuple(probe.feature_info.reduction())}")
    raise ConfigError(
        f"encoder {name!r} has no feature pyramid with strides {STRIDES} ({'; '.join(errors)[:300]}); "
        "choose a CNN encoder such as resnet18, resnet50 or efficientnet_b0"
    )


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    expected = "a .pth/.pt or .safetensors state dict of the timm model"
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - any read failure means "not a usable weights file"
            raise CheckpointError(f"cannot read encoder weights {path}: {exc} (expected {expected})") from None
    else:
        state = load_torch_file(path, "encoder weights", expected)
    # accept checkpoints that wrap the state dict, and DataParallel's "module." prefix
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"encoder weights {path} hold no state dict of tensors; save one with torch.save(model.state_dict(), path)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_encoder_weights(encoder: nn.Module, path: str | Path, name: str) -> None:
    """Copy a local state dict of the timm model ``name`` into ``encoder`` (a features_only model).

    Tensors the feature extractor lacks (the classifier head) are ignored; a missing or
    wrongly shaped tensor is an error. The first conv is adapted to the encoder's input bands.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"encoder weights file not found: {path} (fix model.weights, or set it to null)")
    state = _read_state_dict(path)
    target = encoder.state_dict()
    first_convs = encoder.pretrained_cfg.get("first_conv") or ()
    for conv in (first_convs,) if isinstance(first_convs, str) else first_convs:
        key = f"{conv}.weight"
        if key in state and key in target and state[key].shape[1] != target[key].shape[1]:
            state[key] = adapt_input_conv(target[key].shape[1], state[key])
    missing = [k for k in target if k not in state]
    if missing:
        raise CheckpointError(
            f"encoder weights {path} lack {len(missing)} of {len(target)} tensors of {name!r} "
            f"(e.g. {', '.join(missing[:3])}); the file must be a state dict of the timm model {name!r}"
        )
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in target.items() if state[k].shape != v.shape]
    if wrong:
        raise CheckpointError(
            f"encoder weights {path} do not fit {name!r}: {'; '.join(wrong[:3])} "
            f"(the file must be a state dict of the timm model {name!r})"
        )
    encoder.load_state_dict({k: state[k] for k in target})
