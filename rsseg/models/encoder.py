"""timm ``features_only`` encoders for UNetFormer, with weights from a file or by name.

UNetFormer (Wang et al., ISPRS JPRS 2022) uses an ImageNet ResNet-18; any timm CNN whose feature
pyramid has strides 4, 8, 16 and 32 works. Channels are read from ``feature_info``.
"""

from __future__ import annotations

import timm
import torch
from timm.models import adapt_input_conv
from torch import nn

from rsseg.errors import CheckpointError, ConfigError
from rsseg.models.weights import TIMM_PREFIX, describe, encoder_weights_name, load_state_dict, timm_pretrained

STRIDES = (4, 8, 16, 32)
# 5-stage CNNs (ResNet, EfficientNet, RegNet) have the stride-2 stem at index 0; 4-stage models
# (ConvNeXt) start at stride 4
_OUT_INDICES = ((1, 2, 3, 4), (0, 1, 2, 3))


def create_encoder(name: str, in_channels: int, pretrained: bool = False, weights: str | None = None) -> nn.Module:
    """A timm feature extractor returning four maps at strides 4-32 for [B, in_channels, H, W] input.

    ``weights`` (a local ``.pth``/``.pt``/``.safetensors`` state dict of the timm model ``name``, or a
    name: ``timm:<tag>``, ``torchgeo:<Enum>.<MEMBER>``, see :mod:`rsseg.models.weights`) takes
    precedence over ``pretrained`` (timm's default ImageNet tag of ``name``). For ``in_channels``
    other than the weights' the first convolution is adapted by timm's ``adapt_input_conv`` (RGB
    filters repeated and rescaled).
    """
    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:5]
        hint = f" (close matches: {', '.join(close)})" if close else ""
        raise ConfigError(f"unknown encoder {name!r}{hint}; set model.encoder to a timm model name such as resnet18")
    out_indices = _pyramid_indices(name, in_channels)
    source = encoder_weights_name(name, pretrained, weights)
    options = {"features_only": True, "out_indices": out_indices, "in_chans": in_channels}
    made_for = describe(source).model if source is not None else None
    if made_for is not None and made_for != name:
        raise ConfigError(f"model.weights {source} are for the encoder {made_for!r} but model.encoder is {name!r}; "
                         f"set model.encoder={made_for}")
    if source is not None and source.startswith(TIMM_PREFIX):
        # timm maps the classifier's keys onto the feature extractor's itself (they differ for
        # models whose stages are flattened, e.g. ConvNeXt)
        return timm_pretrained(source, **options)
    encoder = timm.create_model(name, **options)
    if source is not None:
        load_encoder_state(encoder, load_state_dict(source), name, source)
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


def load_encoder_state(encoder: nn.Module, state: dict[str, torch.Tensor], name: str, path: str) -> None:
    """Copy a state dict of the timm model ``name`` (from ``path``, a file or weights name) into ``encoder``.

    Tensors the feature extractor lacks (the classifier head) are ignored; a missing or
    wrongly shaped tensor is an error. The first conv is adapted to the encoder's input bands.
    """
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
