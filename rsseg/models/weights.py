"""Encoder weights by name: a local file, ``timm:<tag>`` or ``torchgeo:<Enum>.<MEMBER>``.

Names resolve through the libraries' own APIs and caches: timm's pretrained configs and
``create_model(pretrained=True)`` (huggingface_hub's cache), and TorchGeo's weights enums
(``.meta`` for bands and provenance, ``.get_state_dict`` through torch.hub's cache). rsseg writes no
downloader of its own; it turns a failed download into one line naming the offline ways on.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from rsseg.errors import CheckpointError, CheckpointNotFoundError, ConfigError, RsSegError

log = logging.getLogger(__name__)

TIMM_PREFIX = "timm:"
TORCHGEO_PREFIX = "torchgeo:"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
HF_HOST = "huggingface.co"
_OFFLINE_HINT = "set model.pretrained=false or model.weights=FILE"


class WeightsDownloadError(RsSegError, OSError):
    """Pretrained weights are not cached and cannot be downloaded (no network, or the host refused)."""


@dataclass(frozen=True)
class WeightsInfo:
    """What a weights name promises, read from the library's metadata without downloading."""

    name: str
    #: "file", "timm" or "torchgeo"
    source: str
    #: timm architecture the state dict belongs to (None for a local file: unknown until read)
    model: str | None = None
    in_chans: int | None = None
    bands: list[str] = field(default_factory=list)
    #: input normalisation the weights were trained with (in the units of ``scale`` below), if known
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    license: str | None = None
    #: publication, repository or download address
    origin: str | None = None

    @property
    def imagenet_normalized(self) -> bool | None:
        """Whether the weights expect ImageNet-normalised RGB (None: unknown)."""
        if self.mean is None:
            return None
        return len(self.mean) >= 3 and all(abs(a - b) < 1e-3 for a, b in zip(self.mean, IMAGENET_MEAN))


def encoder_weights_name(encoder: str, pretrained: bool, weights: str | None) -> str | None:
    """The weights name a model config asks for: ``weights``, else timm's default tag when ``pretrained``."""
    if weights:
        return weights
    return f"{TIMM_PREFIX}{encoder}" if pretrained else None


def describe(name: str) -> WeightsInfo:
    """Metadata of a weights name (no download); unknown names are refused in one line."""
    if name.startswith(TIMM_PREFIX):
        return _describe_timm(name.removeprefix(TIMM_PREFIX))
    if name.startswith(TORCHGEO_PREFIX):
        return _describe_torchgeo(name.removeprefix(TORCHGEO_PREFIX))
    return WeightsInfo(name=name, source="file")


def _describe_timm(tag: str) -> WeightsInfo:
    import timm
    from timm.models import get_pretrained_cfg, split_model_name_tag

    arch, _ = split_model_name_tag(tag)
    try:
        cfg = get_pretrained_cfg(tag) if timm.is_model(arch) else None
    except RuntimeError:  # timm's answer to a known architecture with an unknown tag
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        close = timm.list_pretrained(f"{arch}*")[:5]
        hint = f" (e.g. {', '.join(close)})" if close else ""
        raise ConfigError(f"timm has no pretrained weights named {tag!r}{hint}; `rsseg weights list --encoder NAME` lists them")
    return WeightsInfo(
        name=f"{TIMM_PREFIX}{tag}", source="timm", model=arch, in_chans=cfg.input_size[0],
        mean=tuple(cfg.mean), std=tuple(cfg.std), license=cfg.license,
        origin=cfg.paper_ids or cfg.origin_url or (f"https://huggingface.co/{cfg.hf_hub_id}" if cfg.hf_hub_id else cfg.url),
    )


def _torchgeo_member(spec: str):  # -> torchvision WeightsEnum member
    import torchgeo.models

    enum_name, _, member = spec.partition(".")
    enum = getattr(torchgeo.models, enum_name, None) if enum_name.endswith("_Weights") else None
    if enum is None:
        raise ConfigError(f"torchgeo has no weights enum {enum_name!r}; give torchgeo:<Enum>.<MEMBER>, "
                          "e.g. torchgeo:ResNet18_Weights.SENTINEL2_RGB_MOCO (`rsseg weights list` lists them)")
    if member not in enum.__members__:
        raise ConfigError(f"torchgeo {enum_name} has no member {member!r} (members: {', '.join(list(enum.__members__)[:8])}...)")
    return enum[member]


def _describe_torchgeo(spec: str) -> WeightsInfo:
    return _torchgeo_info(_torchgeo_member(spec))


def _torchgeo_info(weights) -> WeightsInfo:
    meta = weights.meta
    mean = std = None
    # the enum's transforms hold the normalisation the encoder was trained with (e.g. Sentinel-2 / 10000)
    transforms = getattr(weights, "transforms", None)
    for module in transforms.modules() if isinstance(transforms, torch.nn.Module) else ():
        if type(module).__name__ == "Normalize":
            mean = tuple(float(v) for v in torch.as_tensor(module.mean).flatten())
            std = tuple(float(v) for v in torch.as_tensor(module.std).flatten())
    return WeightsInfo(
        name=f"{TORCHGEO_PREFIX}{type(weights).__name__}.{weights.name}", source="torchgeo",
        model=meta.get("model"), in_chans=meta.get("in_chans"), bands=list(meta.get("bands") or []),
        mean=mean, std=std, license=meta.get("license"),
        origin=meta.get("publication") or meta.get("repo") or weights.url,
    )


def check_fit(info: WeightsInfo, encoder: str, bands: list[str], normalization: str) -> None:
    """Refuse weights for another architecture or (multispectral) band set; warn where they are adapted.

    RGB weights on other band counts are adapted as timm adapts the first convolution (filters
    repeated and rescaled); multispectral weights are refused unless the band counts match, since
    their filters belong to named bands.
    """
    if info.model is not None and info.model != encoder:
        raise ConfigError(f"model.weights {info.name} are for the encoder {info.model!r} but model.encoder is {encoder!r}; "
                          f"set model.encoder={info.model}")
    if info.in_chans is not None and info.in_chans != len(bands):
        if info.in_chans != 3 or info.source == "torchgeo" and info.bands and not _is_rgb(info.bands):
            raise ConfigError(f"model.weights {info.name} take {info.in_chans} bands ({', '.join(info.bands) or 'unnamed'}) "
                              f"but the dataset has {len(bands)} ({', '.join(bands)}); choose weights for {len(bands)} bands "
                              f"(`rsseg weights list --encoder {encoder} --bands {len(bands)}`)")
        log.warning("model.weights %s take %d bands, the dataset has %d: the first convolution is adapted "
                    "(RGB filters repeated and rescaled)", info.name, info.in_chans, len(bands))
    if info.source == "torchgeo" and info.imagenet_normalized is False and normalization == "imagenet":
        log.warning("model.weights %s were trained on inputs normalised with mean %s, std %s, not ImageNet's; "
                    "consider dataset.normalization=stats", info.name, list(info.mean or ()), list(info.std or ()))


def _is_rgb(bands: list[str]) -> bool:
    # TorchGeo names Sentinel-2's RGB B4, B3, B2; aerial RGB weights name them R, G, B
    return len(bands) == 3 and {b.upper() for b in bands} in ({"B4", "B3", "B2"}, {"R", "G", "B"}, {"RED", "GREEN", "BLUE"})


def load_state_dict(name: str, *, progress: bool = False) -> dict[str, torch.Tensor]:
    """The state dict a weights name stands for: downloaded once into the library's cache, then read from it."""
    info = describe(name)
    if info.source == "file":
        return read_state_dict(Path(name))
    if info.source == "timm":
        state = timm_pretrained(name).state_dict()
    else:
        member = _torchgeo_member(name.removeprefix(TORCHGEO_PREFIX))
        host = urlparse(member.url).hostname or ""
        # torch.hub announces a download before trying it: refuse an unreachable host in one line
        if not torchgeo_cache_path(member.url).is_file() and not _reachable(host):
            raise _download_error(info, OSError(f"{host} unreachable"))
        try:
            state = member.get_state_dict(progress=progress)
        except Exception as exc:  # noqa: BLE001 - hub, HTTP and cache failures come in many types
            raise _download_error(info, exc) from exc
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def timm_pretrained(name: str, **kwargs) -> torch.nn.Module:
    """``timm.create_model(tag, pretrained=True, **kwargs)`` for ``timm:<tag>``: timm resolves its own
    source (Hugging Face hub, or the config's URL), key filters and first-conv adaptation."""
    import timm
    from timm.models import get_pretrained_cfg

    info = describe(name)
    tag = name.removeprefix(TIMM_PREFIX)
    hub_id = get_pretrained_cfg(tag).hf_hub_id
    # huggingface_hub retries an unreachable host for about a minute, logging each try: ask once
    if hub_id and not _hf_cached(hub_id) and (_hf_offline() or not _reachable(HF_HOST)):
        raise _download_error(info, OSError(f"{HF_HOST} unreachable"))
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)
    try:
        return timm.create_model(tag, pretrained=True, **kwargs)
    except Exception as exc:  # noqa: BLE001 - hub, HTTP and cache failures come in many types
        raise _download_error(info, exc) from exc
    finally:
        hub_log.setLevel(level)


def _hf_cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    # the files timm's Hugging Face loader asks for, in its order
    return any(isinstance(try_to_load_from_cache(repo_id, f), str) for f in ("model.safetensors", "pytorch_model.bin"))


def torchgeo_cache_path(url: str) -> Path:
    """Where torch.hub keeps the file of ``url`` (``$TORCH_HOME/hub/checkpoints/<file name>``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def _hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _reachable(host: str, timeout: float = 3.0) -> bool:
    # behind a proxy a direct connection says nothing: leave the answer to the library
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _download_error(info: WeightsInfo, exc: Exception) -> WeightsDownloadError:
    detail = str(exc).splitlines()[0][:100] if str(exc) else exc.__class__.__name__
    return WeightsDownloadError(
        f"cannot download {info.source} weights for {info.model or info.name} (no network? {info.name}: {detail}): "
        f"{_OFFLINE_HINT}"
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A local ``.pth``/``.pt``/``.safetensors`` state dict (wrapped checkpoints and ``module.`` unwrapped)."""
    from rsseg.io import load_tensor_file

    if not path.is_file():
        raise CheckpointNotFoundError(f"encoder weights file not found: {path} (fix model.weights, or set it to null)")
    return unwrap_state_dict(load_tensor_file(path, "encoder weights", "a .pth/.pt or .safetensors state dict of the timm model"), path)


def unwrap_state_dict(state: Any, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a loaded weights file: a wrapping checkpoint's ``state_dict``/``model`` entry,
    DataParallel's ``module.`` prefix removed."""
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"encoder weights {path} hold no state dict of tensors; save one with torch.save(model.state_dict(), path)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def prepare(encoder: str, pretrained: bool, weights: str | None, bands: list[str], normalization: str) -> WeightsInfo | None:
    """Check the weights a model config names against the dataset and make sure they are cached.

    Called before any data is read, so an offline machine stops at once with the ways on.
    """
    name = encoder_weights_name(encoder, pretrained, weights)
    if name is None:
        return None
    info = describe(name)
    check_fit(info, encoder, bands, normalization)
    if info.source != "file":
        load_state_dict(name, progress=True)
    return info


def list_weights(encoder: str | None = None, bands: int | None = None) -> list[WeightsInfo]:
    """Pretrained weights by name from timm and TorchGeo that fit ``encoder`` and ``bands`` (None: any)."""
    import timm
    import torchgeo.models

    found: list[WeightsInfo] = []
    if bands in (None, 3):
        pattern = f"{encoder}.*" if encoder else "*"
        found += [_describe_timm(tag) for tag in timm.list_pretrained(pattern)]
    for attr in sorted(dir(torchgeo.models)):
        if not attr.endswith("_Weights"):
            continue
        for member in getattr(torchgeo.models, attr):
            info = _torchgeo_info(member)
            if (encoder is None or info.model == encoder) and (bands is None or info.in_chans == bands):
                found.append(info)
    return found


def fetch(name: str, out_dir: Path | None = None) -> Path | None:
    """Download ``name`` into its library's cache (with a progress bar); with ``out_dir`` also write it
    there as ``<name>.pth`` for an offline machine (use it as ``model.weights=FILE``). Returns that file."""
    if describe(name).source == "file":
        raise ConfigError(f"{name!r} is a local file; fetch takes timm:<tag> or torchgeo:<Enum>.<MEMBER>")
    state = load_state_dict(name, progress=True)
    if out_dir is None:
        return None
    from rsseg.io import atomic_path, write_error

    path = out_dir / f"{name.replace(':', '-')}.pth"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:  # an interrupted or failed write leaves no half file at the target
            torch.save(state, tmp)
    except OSError as exc:
        raise (write_error(exc, "weights file", path) or exc) from None
    return path
