"""Import UNetFormer weights published with GeoSeg (github.com/WangLibo1995/GeoSeg).

GeoSeg trains the same UNetFormer (Wang et al., ISPRS JPRS 190, 2022) as rsseg, under other module
names: a Lightning checkpoint whose ``state_dict`` keys start with ``net.`` (or a bare state dict
of the model). :func:`geoseg_model` renames every tensor to rsseg's names and checks the
relative position indices rsseg derives itself; :func:`import_geoseg` writes a self-describing
rsseg checkpoint for one of the datasets GeoSeg publishes weights for (or for classes given
explicitly).

GeoSeg has no embedding projection: the importer sets rsseg's ``projection`` (decode_channels ->
embed_dim = decode_channels, 1x1, no bias) to the identity, so the FRH feature reaches the
classifier unchanged and the logits equal GeoSeg's whether or not the projection sits on the
classifier path. GeoSeg normalises inputs with ImageNet mean/std on 0-255 pixels scaled to 0-1
(albumentations' ``Normalize`` defaults) and predicts 1024 x 1024 tiles; the imported checkpoint records
that input contract (8-bit values, :data:`GEOSEG_CONTRACT`), or the one measured on a raster the user
names (``--calibrate``), so ``rsseg predict`` refuses a raster in another range. Weights holding NaN,
infinite values or negative BatchNorm variances are refused. :func:`calibrate_checkpoint` adds a
measured contract to an rsseg checkpoint written before rsseg recorded one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rsseg.checkpoint import META_KEY, ModelMeta, check_weights, model_state, read_checkpoint, save_model
from rsseg.config import Config, DatasetConfig, ModelConfig, is_hex_color
from rsseg.data.datasets import get_dataset
from rsseg.data.normalize import IMAGENET_MEAN, IMAGENET_STD
from rsseg.errors import CheckpointError, CheckpointNotFoundError, ConfigError
from rsseg.inference.contract import calibrate_input
from rsseg.io import atomic_path, load_tensor_file
from rsseg.models.attention import relative_position_index
from rsseg.models.unetformer import UNetFormer, build_model
from rsseg.runconfig import config_from_dict

#: tile size GeoSeg trains and tests on (1024 x 1024 patches for every dataset)
GEOSEG_TILE = 1024
#: the input contract of GeoSeg's documented normalisation (8-bit RGB / 255, then ImageNet mean/std):
#: dtype and the [low, high] recorded for every band
GEOSEG_CONTRACT = ("uint8", (0.0, 255.0))
#: encoders tried, in order, when none is named (GeoSeg's UNetFormer uses swsl_resnet18, a
#: ResNet-18 with semi-weakly supervised weights; its r50 config a ResNet-50)
ENCODERS = ("resnet18", "resnet34", "resnet50", "resnet101")

# GeoSeg name -> rsseg name. Only these tensors exist in a GeoSeg UNetFormer; anything else means
# another architecture. ``(b[234])``: the three transformer blocks, ``(p[123])``: the fusions.
_RULES: tuple[tuple[str, str], ...] = (
    (r"backbone\.(.+)", r"encoder.\1"),
    (r"decoder\.pre_conv\.([01]\..+)", r"decoder.pre_conv.\1"),
    (r"decoder\.(b[234])\.(norm[12]\..+)", r"decoder.\1.\2"),
    (r"decoder\.(b[234])\.attn\.qkv\.0\.weight", r"decoder.\1.attn.qkv.weight"),
    (r"decoder\.(b[234])\.attn\.(local[12]\.[01]\..+)", r"decoder.\1.attn.\2"),
    (r"decoder\.(b[234])\.attn\.(proj\.[012]\..+)", r"decoder.\1.attn.\2"),
    (r"decoder\.(b[234])\.attn\.relative_position_bias_table", r"decoder.\1.attn.relative_position_bias_table"),
    (r"decoder\.(b[234])\.mlp\.fc1\.(weight|bias)", r"decoder.\1.mlp.0.\2"),
    (r"decoder\.(b[234])\.mlp\.fc2\.(weight|bias)", r"decoder.\1.mlp.2.\2"),
    (r"decoder\.(p[123])\.pre_conv\.0\.weight", r"decoder.\1.pre_conv.weight"),
    (r"decoder\.(p[123])\.weights", r"decoder.\1.weights"),
    (r"decoder\.(p[123])\.(post_conv\.[01]\..+)", r"decoder.\1.\2"),
    (r"decoder\.p1\.pa\.0\.(weight|bias)", r"decoder.p1.spatial.0.\1"),
    (r"decoder\.p1\.ca\.([13])\.0\.weight", r"decoder.p1.channel.\1.weight"),
    (r"decoder\.p1\.(shortcut\.[01]\..+)", r"decoder.p1.\1"),
    (r"decoder\.p1\.(proj\.[012]\..+)", r"decoder.p1.\1"),
    (r"decoder\.segmentation_head\.0\.([01]\..+)", r"head.feature.\1"),
    (r"decoder\.segmentation_head\.2\.0\.weight", r"head.classifier.weight"),
    (r"decoder\.aux_head\.conv\.([01]\..+)", r"aux_head.0.\1"),
    (r"decoder\.aux_head\.conv_out\.0\.weight", r"aux_head.2.weight"),
)
_COMPILED = tuple((re.compile(pattern), repl) for pattern, repl in _RULES)
#: buffers GeoSeg saves and rsseg derives from the window size: checked, never copied
_DERIVED = re.compile(r"decoder\.(b[234])\.attn\.relative_position_index")
_CLASSIFIER = "decoder.segmentation_head.2.0.weight"
_STEM = "decoder.pre_conv.0.weight"
_BIAS_TABLE = "decoder.b4.attn.relative_position_bias_table"
_FIRST_CONV = "backbone.conv1.weight"


def rsseg_name(geoseg_key: str) -> str | None:
    """rsseg's name for a GeoSeg UNetFormer tensor (``net.`` prefix removed), None if it has none."""
    for pattern, repl in _COMPILED:
        if pattern.fullmatch(geoseg_key):
            return pattern.sub(repl, geoseg_key)
    return None


@dataclass
class GeoSegDataset:
    """What a GeoSeg model's outputs mean and which pixels it expects."""

    classes: list[str]
    colors: list[str]
    bands: list[str]
    gsd: float | None
    #: rsseg dataset adapter with the same label encoding, "folder" where rsseg has none
    adapter: str


def _benchmark(name: str) -> GeoSegDataset:
    # GeoSeg's class order for LoveDA, Potsdam and Vaihingen is the benchmark's, as in rsseg; its
    # Vaihingen tiles are the IRRG false-colour orthophotos, its Potsdam split the RGB tiles
    spec = get_dataset(name)
    return GeoSegDataset(list(spec.classes), list(spec.colors), list(spec.bands), spec.gsd, name)


def geoseg_dataset(name: str) -> GeoSegDataset:
    """Class list, palette, bands and ground sample distance of a GeoSeg dataset."""
    if name in ("loveda", "potsdam", "vaihingen"):
        return _benchmark(name)
    if name == "uavid":
        # GeoSeg's UAVid order (clutter last) and the UAVid palette; oblique UAV video frames
        # (3840 x 2160 at about 50 m flying height), so there is no single ground sample distance
        return GeoSegDataset(
            ["building", "road", "tree", "low vegetation", "moving car", "static car", "human", "clutter"],
            ["#800000", "#804080", "#008000", "#808000", "#400080", "#c000c0", "#404000", "#000000"],
            ["red", "green", "blue"],
            None,
            "folder",
        )
    raise ConfigError(f"unknown GeoSeg dataset {name!r}; choose loveda, potsdam, vaihingen or uavid, or give --classes")


def read_geoseg_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The model tensors of a GeoSeg checkpoint (Lightning ``state_dict`` under ``net.``, or a bare
    state dict, optionally with DataParallel's ``module.``), loaded without running code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"GeoSeg checkpoint not found: {path}")
    state = load_tensor_file(
        path, "GeoSeg checkpoint",
        "a GeoSeg .ckpt or a state dict of tensors; a file holding Python objects runs code when loaded anywhere, "
        "so ask its publisher for a weights-only file (a state dict or .safetensors) instead of loading it yourself",
    )
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors (expected a GeoSeg UNetFormer checkpoint)")
    keys = [k.removeprefix("module.") for k in state]
    if any(k.startswith("net.") for k in keys):
        # GeoSeg's LightningModule keeps the model in ``net`` (its losses hold no tensors)
        return {k[4:]: v for k, v in zip(keys, state.values()) if k.startswith("net.")}
    return dict(zip(keys, state.values()))


def _architecture(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Hyper-parameters read off tensor shapes; a missing anchor tensor means another architecture."""
    missing = [k for k in (_CLASSIFIER, _STEM, _BIAS_TABLE, _FIRST_CONV) if k not in state]
    if missing:
        first = ", ".join(list(state)[:4])
        raise CheckpointError(
            f"not a GeoSeg UNetFormer checkpoint: it lacks {', '.join(missing)} (its first keys: {first}); "
            "only UNetFormer with a ResNet encoder can be imported"
        )
    rows, heads = state[_BIAS_TABLE].shape
    window = (math.isqrt(rows) + 1) // 2
    if (2 * window - 1) ** 2 != rows:
        raise CheckpointError(f"{_BIAS_TABLE} has {rows} rows, not (2w-1)^2 for any window size w")
    return {
        "num_classes": state[_CLASSIFIER].shape[0],
        "in_channels": state[_FIRST_CONV].shape[1],
        "decode_channels": state[_STEM].shape[0],
        "window_size": window,
        "num_heads": heads,
        "aux_head": "decoder.aux_head.conv_out.0.weight" in state,
    }


def _misfits(mapped: dict[str, torch.Tensor], target: dict[str, torch.Tensor], prefix: str) -> list[str]:
    wrong = [f"{k} {tuple(v.shape)} != {tuple(target[k].shape)}" for k, v in mapped.items()
             if k.startswith(prefix) and k in target and v.shape != target[k].shape]
    wrong += [f"{k} missing" for k in target if k.startswith(prefix) and k not in mapped]
    wrong += [f"{k} unexpected" for k in mapped if k.startswith(prefix) and k not in target]
    return wrong


def _detect_encoder(mapped: dict[str, torch.Tensor], in_channels: int, encoder: str | None) -> str:
    from rsseg.models.encoder import create_encoder

    errors = {}
    for name in [encoder] if encoder else ENCODERS:
        target = {f"encoder.{k}": v for k, v in create_encoder(name, in_channels).state_dict().items()}
        wrong = _misfits(mapped, target, "encoder.")
        if not wrong:
            return name
        errors[name] = wrong
    name = encoder or ENCODERS[0]
    raise CheckpointError(
        f"the checkpoint's encoder is not {'/'.join(errors)}: {len(errors[name])} tensors do not fit {name} "
        f"({'; '.join(errors[name][:3])}); pass --encoder with the timm name of its backbone"
    )


def geoseg_model(state: dict[str, torch.Tensor], encoder: str | None = None) -> tuple[UNetFormer, ModelConfig]:
    """Build rsseg's UNetFormer from a GeoSeg UNetFormer state dict (``net.`` prefix removed).

    Every tensor is renamed and loaded strictly; the embedding projection is the identity. The
    model config (encoder, decoder width, window, heads, aux head) is read off the tensors;
    unknown or misshapen tensors are refused, listing the first ones that do not fit.
    """
    arch = _architecture(state)
    mapped: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        derived = _DERIVED.fullmatch(key)
        if derived:
            if not torch.equal(value.cpu().long(), relative_position_index(arch["window_size"])):
                raise CheckpointError(f"{key} is not the relative position index of {arch['window_size']}x{arch['window_size']} windows")
            continue
        name = rsseg_name(key)
        if name is None:
            unknown.append(f"{key} {tuple(value.shape)}")
        else:
            mapped[name] = value.detach().cpu().float() if value.is_floating_point() else value.detach().cpu()
    if unknown:
        raise CheckpointError(
            f"not a GeoSeg UNetFormer checkpoint: {len(unknown)} tensors have no counterpart "
            f"({'; '.join(unknown[:4])})"
        )
    cfg = ModelConfig(
        encoder=_detect_encoder(mapped, arch["in_channels"], encoder),
        decode_channels=arch["decode_channels"],
        window_size=arch["window_size"],
        num_heads=arch["num_heads"],
        embed_dim=arch["decode_channels"],
        aux_head=arch["aux_head"],
    )
    model = build_model(cfg, num_classes=arch["num_classes"], in_channels=arch["in_channels"])
    target = model.state_dict()
    mapped["projection.weight"] = identity_projection(model)
    wrong = _misfits(mapped, target, "")
    if wrong:
        raise CheckpointError(f"the checkpoint does not fit rsseg's UNetFormer: {'; '.join(wrong[:4])}")
    model.load_state_dict(mapped, strict=True)
    return model, cfg


def identity_projection(model: UNetFormer) -> torch.Tensor:
    """A 1x1 projection weight [D, D, 1, 1] that passes the classifier input through unchanged."""
    out_channels, in_channels = model.projection.weight.shape[:2]
    if out_channels != in_channels:
        raise CheckpointError(f"an identity projection needs embed_dim == decode_channels (got {out_channels} vs {in_channels})")
    return torch.eye(in_channels).reshape(in_channels, in_channels, 1, 1)


def import_geoseg(
    src: str | Path,
    out: str | Path,
    *,
    dataset: str | None = None,
    classes: list[str] | None = None,
    colors: list[str] | None = None,
    bands: list[str] | None = None,
    gsd: float | None = None,
    encoder: str | None = None,
    calibrate: str | Path | None = None,
) -> ModelMeta:
    """Convert the GeoSeg UNetFormer checkpoint ``src`` into the rsseg checkpoint ``out``.

    Classes, colours, bands and GSD come from ``dataset`` (loveda, potsdam, vaihingen, uavid);
    explicit values override them (``classes`` and ``colors`` are required without a dataset).
    The input contract is GeoSeg's documented input, 8-bit values 0-255 per band
    (:data:`GEOSEG_CONTRACT`), or, with ``calibrate``, the dtype and per-band p1/p99 measured on
    that raster (a sample of the imagery the weights were trained on; values beyond 0-255 refused).
    """
    if dataset is not None:
        spec = geoseg_dataset(dataset)
    elif classes is None or colors is None:
        raise ConfigError("name the dataset the weights were trained on (--dataset) or give --classes and --colors")
    else:
        spec = GeoSegDataset(list(classes), list(colors), ["red", "green", "blue"], None, "folder")
    if classes is not None:
        if dataset is not None and len(classes) != len(spec.classes):
            raise ConfigError(f"--classes lists {len(classes)} names but {dataset} has {len(spec.classes)} classes")
        spec.classes = list(classes)
    spec.colors = list(colors) if colors is not None else spec.colors
    spec.bands = list(bands) if bands is not None else spec.bands
    spec.gsd = gsd if gsd is not None else spec.gsd
    bad = [c for c in spec.colors if not is_hex_color(c)]
    if len(spec.colors) != len(spec.classes) or bad:
        raise ConfigError(f"give one '#rrggbb' colour per class ({len(spec.classes)} classes, {len(spec.colors)} colours{', bad: ' + ', '.join(bad) if bad else ''})")

    state = read_geoseg_state(src)
    check_weights(state, src, "GeoSeg checkpoint")
    model, model_cfg = geoseg_model(state, encoder)
    num_classes, in_channels = model.num_classes, model.in_channels
    if num_classes != len(spec.classes):
        raise CheckpointError(
            f"the checkpoint predicts {num_classes} classes but {dataset or '--classes'} has {len(spec.classes)} "
            f"({', '.join(spec.classes)}); pick the dataset it was trained on, or give --classes"
        )
    if in_channels != len(spec.bands) or in_channels != len(IMAGENET_MEAN):
        raise CheckpointError(f"the checkpoint takes {in_channels} bands but {len(spec.bands)} are named ({','.join(spec.bands)}); GeoSeg models take 3")
    ds = DatasetConfig(
        name=spec.adapter, classes=spec.classes, colors=spec.colors, bands=spec.bands, gsd=spec.gsd,
        normalization="imagenet", scale=255.0,
    )
    cfg = config_from_dict(Config(dataset=ds, model=model_cfg).to_dict())
    meta = ModelMeta(
        classes=spec.classes, colors=spec.colors, bands=spec.bands,
        mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD), scale=255.0, ignore_index=ds.ignore_index,
        patch_size=GEOSEG_TILE, gsd=spec.gsd, config=cfg.to_dict(),
        input_dtype=GEOSEG_CONTRACT[0], input_range=[list(GEOSEG_CONTRACT[1]) for _ in range(in_channels)],
    )
    if calibrate is not None:
        # GeoSeg divides by 255: a calibration scene beyond 8-bit values cannot be what it was trained on
        for key, value in calibrate_input(calibrate, meta, max_p99=GEOSEG_CONTRACT[1][1]).items():
            setattr(meta, key, value)
    save_model(out, model, meta)
    return meta


def calibrate_checkpoint(src: str | Path, out: str | Path, scene: str | Path) -> ModelMeta:
    """Copy the rsseg checkpoint ``src`` to ``out`` with the input contract measured on ``scene``
    (:func:`rsseg.inference.contract.calibrate_input`), for a checkpoint written before rsseg
    recorded one; weights and any training state are copied unchanged."""
    ckpt = read_checkpoint(src)
    meta = ModelMeta.from_dict(ckpt[META_KEY])
    check_weights(model_state(ckpt), src)
    for key, value in calibrate_input(scene, meta).items():
        setattr(meta, key, value)
    ckpt[META_KEY] = meta.to_dict()
    with atomic_path(Path(out)) as tmp:
        torch.save(ckpt, tmp)
    return meta
