"""The input contract between a raster and a checkpoint: valid pixels, dtype and value range.

A model only means something on numbers like those it was trained on. The checkpoint records the
training images' dtype and per-band value percentiles in raw units
(:attr:`rsseg.checkpoint.ModelMeta.input_dtype`, :attr:`~rsseg.checkpoint.ModelMeta.input_range`,
measured by :func:`measure_training_input`), and every inference caller (``rsseg predict``,
``rsseg evaluate -m``, the viewer) checks an input against them with :func:`input_mapping`
before the model loads: a uint16 or 0-1 float version of a uint8 scene is refused in one line
that names the fix (``--scale F`` to multiply the input, or ``--scale auto`` to stretch each
band's p1-p99 onto the training p1-p99). A checkpoint without these fields is refused with the
command that adds them (:func:`require_contract`: ``rsseg import CKPT --calibrate SCENE``, measured by
:func:`calibrate_input`).

Pixels that must never reach the model (:func:`invalid_pixels`): masked in every selected band
(nodata value, alpha band, internal mask; GDAL's convention that a pixel with data in any band is
data) or non-finite in any band. They are filled with the training mean before normalisation
(so they normalise to 0) and come out as class 255 / confidence 0.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import MaskFlags
from rasterio.errors import RasterioError
from rasterio.windows import Window

from rsseg.checkpoint import ModelMeta, is_onnx_model
from rsseg.errors import CheckpointError, ConfigError, InputRasterError
from rsseg.io import is_remote, open_raster, unfold_url

#: an input whose high percentile is this many times off the training one is another value range
RANGE_FACTOR = 8.0
#: percentiles recorded per band (raw units)
PERCENTILES = (1.0, 99.0)
#: the value-range sample: a GRID x GRID spread of windows of SAMPLE pixels (bounded cost on any size)
GRID, SAMPLE = 4, 128
#: at most this many training images are sampled for the recorded range
MAX_TRAINING_FILES = 64


def read_error(exc: Exception, path: str | Path, window: Window | None = None) -> InputRasterError:
    """A GDAL read failure (truncated or corrupt file) as one line naming the file."""
    where = f" at rows {int(window.row_off)}-{int(window.row_off + window.height)}" if window is not None else ""
    cause = exc.__cause__ or exc.__context__  # GDAL's own reason ("IReadBlock failed at ...")
    text = str(cause if cause is not None and str(cause) else exc)
    first = text.splitlines()[0][:160] if text else exc.__class__.__name__
    if is_remote(str(path)):
        return InputRasterError(f"cannot read input raster {unfold_url(str(path))}{where}: {first}; the server stopped "
                                "answering within GDAL's limits or the file is incomplete (check the network; "
                                "GDAL_HTTP_TIMEOUT and GDAL_HTTP_LOW_SPEED_TIME set the limits)")
    return InputRasterError(f"cannot read input raster {path}{where}: {first}; the file (or one it refers to) is "
                            "truncated, corrupt or missing (check it with gdalinfo -checksum, or re-export it)")


def invalid_pixels(src: rasterio.DatasetReader, bands: Sequence[int], window: Window,
                   raw: np.ndarray | None = None) -> np.ndarray | None:
    """[h, w] bool of the pixels that must not reach the model, or ``None`` when all are valid.

    Masked in every one of ``bands`` (``read_masks``: nodata value, alpha, internal mask), or
    non-finite in any (``raw``: the window's values, read here for a float raster when not given).
    """
    bad = None
    if not all(MaskFlags.all_valid in src.mask_flag_enums[b - 1] for b in bands):
        bad = (src.read_masks(list(bands), window=window) == 0).all(axis=0)
    if np.dtype(src.dtypes[bands[0] - 1]).kind == "f":
        if raw is None:
            raw = src.read(list(bands), window=window)
        nonfinite = ~np.isfinite(raw).all(axis=0)
        bad = nonfinite if bad is None else bad | nonfinite
    return bad if bad is not None and bad.any() else None


def sample_windows(width: int, height: int, grid: int = GRID, size: int = SAMPLE) -> list[Window]:
    """Up to ``grid`` x ``grid`` windows of ``size`` pixels spread evenly over a raster."""
    w, h = min(size, width), min(size, height)
    cols = sorted({round(i * (width - w) / max(grid - 1, 1)) for i in range(grid)})
    rows = sorted({round(i * (height - h) / max(grid - 1, 1)) for i in range(grid)})
    return [Window(c, r, w, h) for r in rows for c in cols]


def sample_values(src: rasterio.DatasetReader, bands: Sequence[int], path: str | Path) -> np.ndarray:
    """Valid values [C, n] float64 of ``bands`` in :func:`sample_windows` (n may be 0)."""
    parts = []
    for win in sample_windows(src.width, src.height):
        try:
            raw = src.read(list(bands), window=win)
            bad = invalid_pixels(src, bands, win, raw)
        except RasterioError as exc:
            raise read_error(exc, path, win) from None
        x = raw.reshape(raw.shape[0], -1).astype(np.float64)
        parts.append(x if bad is None else x[:, ~bad.ravel()])
    return np.concatenate(parts, axis=1)


def value_range(values: np.ndarray) -> list[list[float]]:
    """Per-band [p1, p99] of values [C, n]."""
    lo, hi = np.percentile(values, PERCENTILES, axis=1)
    return [[float(a), float(b)] for a, b in zip(lo, hi)]


def measure_training_input(images: Sequence[tuple[str | Path, Sequence[int]]]) -> dict:
    """``{"input_dtype", "input_range"}`` of training images ``(path, 1-based bands)``, for
    :class:`~rsseg.checkpoint.ModelMeta`: the first image's dtype and per-band [p1, p99] in raw
    units over the valid pixels of a sample of windows of up to :data:`MAX_TRAINING_FILES` files."""
    images = list(images)
    if not images:
        return {}
    step = max(1, math.ceil(len(images) / MAX_TRAINING_FILES))
    parts, dtype = [], None
    for path, bands in images[::step]:
        with open_raster(path, "dataset image") as src:
            dtype = dtype or src.dtypes[bands[0] - 1]
            parts.append(sample_values(src, bands, path))
    values = np.concatenate(parts, axis=1)
    return {"input_dtype": dtype, "input_range": value_range(values) if values.shape[1] else None}


def measure_samples(images: Iterable[np.ndarray], max_images: int = MAX_TRAINING_FILES,
                    per_image: int = SAMPLE * SAMPLE) -> dict:
    """``{"input_dtype", "input_range"}`` of training images given as arrays ``[C, H, W]`` (a
    datamodule that hides its files, e.g. a wrapped TorchGeo one): the arrays' dtype and per-band
    [p1, p99] over the finite values of up to ``max_images`` images, about ``per_image`` pixels of
    each (evenly strided). ``{}`` without any image."""
    parts, dtype = [], None
    for image in itertools.islice(images, max_images):
        x = np.asarray(image)
        dtype = dtype or str(x.dtype)
        flat = x.reshape(x.shape[0], -1)
        flat = flat[:, :: max(1, flat.shape[1] // per_image)].astype(np.float64)
        parts.append(flat[:, np.isfinite(flat).all(axis=0)])
    if not parts:
        return {}
    values = np.concatenate(parts, axis=1)
    return {"input_dtype": dtype, "input_range": value_range(values) if values.shape[1] else None}


def require_contract(meta: ModelMeta, model: str | Path | None = None) -> None:
    """Refuse a model whose metadata records no input contract (``input_dtype`` None: written
    before rsseg recorded one): nothing could tell a raster in another value range from a good
    one, and the model would map it confidently and wrongly. ``model``: its file, for the message."""
    if meta.input_dtype is not None:
        return
    exported = model is not None and is_onnx_model(model)
    name = f"{'model' if exported else 'checkpoint'} {model}" if model is not None else "the model"
    source = model if model is not None and not exported else "CHECKPOINT"
    then = ", then export it again with `rsseg export`" if exported else ""
    raise CheckpointError(
        f"{name} records no input contract (the data type and value range of the images it was trained on), so a "
        "raster in another range would give a confident, wrong map; add one with `rsseg import "
        f"{source} --calibrate SCENE -o NEW.ckpt` (SCENE: a raster like its training images){then}, or re-train it "
        "with `rsseg train`")


def calibrate_input(scene: str | Path, meta: ModelMeta, *, max_p99: float | None = None) -> dict:
    """The input contract (``{"input_dtype", "input_range"}``) measured on ``scene``, a raster like
    the images the model was trained on (``rsseg import --calibrate``): its dtype and per-band
    [p1, p99] of its first ``meta.in_channels`` bands, sampled as training images are.

    Refused when the scene lacks bands or valid pixels, or when its values cannot be what the
    model's normalisation (``raw / meta.scale``) was made for: a band's p99 above ``max_p99``
    (default twice the scale) or below 1/:data:`RANGE_FACTOR` of the scale.
    """
    n = meta.in_channels
    with open_raster(scene, "calibration") as src:
        if src.count < n:
            raise InputRasterError(f"--calibrate {scene} has {src.count} band(s) but the model takes {n} "
                                   f"({', '.join(meta.bands)}); name a raster with those bands first, in order")
        dtype = src.dtypes[0]
        values = sample_values(src, list(range(1, n + 1)), scene)
    if values.shape[1] == 0:
        raise InputRasterError(f"--calibrate {scene} has no valid pixel to measure (all nodata); name a raster with imagery")
    measured = value_range(values)
    top = max_p99 if max_p99 is not None else 2 * meta.scale
    for i, (_, hi) in enumerate(measured):
        if hi > top or hi * RANGE_FACTOR < meta.scale:
            raise InputRasterError(
                f"--calibrate {scene} ({dtype}) band {i + 1} ({meta.bands[i]}) p99 is {_fmt(hi)}, but the model divides "
                f"its inputs by {meta.scale:g} (values up to about {_fmt(top)}); calibrate with a raster like the "
                "images it was trained on, or convert the scene to that range first")
    return {"input_dtype": dtype, "input_range": measured}


def parse_scale(value: str | float | None) -> float | str | None:
    """``--scale``: ``None``, ``auto``, or a positive factor (``255``, ``0.0039``, ``1/257``)."""
    if value is None or isinstance(value, float):
        factor = value
    elif str(value).strip().lower() == "auto":
        return "auto"
    else:
        text = str(value).strip()
        try:
            num, _, den = text.partition("/")
            factor = float(num) / float(den) if den else float(num)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"--scale {value!r} is not a number; use a factor like 255 or 1/257, or auto") from None
    if factor is not None and not (math.isfinite(factor) and factor > 0):
        raise ConfigError(f"--scale must be a positive factor (got {value}); e.g. 255 for 0-1 floats, or auto")
    return factor


@dataclass(frozen=True)
class InputMapping:
    """``raw * gain + offset`` per band [C, 1, 1]: the user's rescale onto the training range."""

    gain: np.ndarray
    offset: np.ndarray

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        return raw.astype(np.float32) * self.gain + self.offset

    def describe(self) -> str:
        g, o = self.gain.ravel(), self.offset.ravel()
        return "input x " + ", ".join(f"{a:.4g}" + (f" + {b:.4g}" if b else "") for a, b in zip(g, o))


def _fmt(v: float) -> str:
    return f"{v:.6g}" if abs(v) >= 1 else f"{v:.4g}"


def _factor(v: float) -> str:
    """A --scale factor as the user would type it: 255, or 1/257 rather than 0.003891."""
    return _fmt(v) if v >= 1 else f"1/{1 / v:.4g}"


def input_mapping(src: rasterio.DatasetReader, meta: ModelMeta, bands: Sequence[int], path: str | Path,
                  scale: float | str | None = None, *, can_scale: bool = True) -> InputMapping | None:
    """Check ``src`` (``bands`` in model order) against the checkpoint's input contract.

    Returns the rescale to apply (``None``: use the raw values). Raises
    :class:`~rsseg.errors.InputRasterError` when the values lie in another range than the
    training images' (p99 more than :data:`RANGE_FACTOR` times off in a band; a darker scene of
    the training dtype is allowed), naming the ``--scale`` that fixes it (``can_scale=False``: the
    caller has no such option, e.g. ``evaluate -m``; the message says how to rescale). A model without
    a contract is refused (:func:`require_contract`); one whose training images had no valid pixel
    to measure has no range to compare: only an explicit factor is applied.
    """
    require_contract(meta)
    scale = parse_scale(scale)
    n = len(bands)
    factor = np.full((n, 1, 1), 1.0 if not isinstance(scale, float) else scale, np.float32)
    mapping = InputMapping(factor, np.zeros((n, 1, 1), np.float32)) if isinstance(scale, float) else None
    trained = meta.input_range
    if not trained or len(trained) != n:
        if scale == "auto":
            raise ConfigError("--scale auto needs the training value range, which this checkpoint does not record (its "
                              "training images had no valid pixel to measure); give a factor (e.g. --scale 255) instead")
        return mapping
    values = sample_values(src, bands, path)
    if values.shape[1] == 0:
        return mapping  # nothing valid to measure (all nodata): every pixel comes out as nodata anyway
    got = np.asarray(value_range(values))
    want = np.asarray(trained, dtype=np.float64)
    if scale == "auto":
        span = np.where(got[:, 1] > got[:, 0], got[:, 1] - got[:, 0], 1.0)
        gain = (want[:, 1] - want[:, 0]) / span
        offset = want[:, 0] - got[:, 0] * gain
        return InputMapping(gain.astype(np.float32)[:, None, None], offset.astype(np.float32)[:, None, None])
    got = got * factor.reshape(n, 1)
    dtype = src.dtypes[bands[0] - 1]
    same_kind = dtype == meta.input_dtype and mapping is None
    names = list(meta.bands)
    for i in range(n):
        hi_t, hi_g = want[i, 1], got[i, 1]
        if hi_t <= 0:
            continue  # a band that was all zero in training says nothing about a range
        ratio = hi_g / hi_t
        if ratio > RANGE_FACTOR or (not same_kind and ratio < 1 / RANGE_FACTOR):
            suggest = float(np.median(want[:, 1] / np.maximum(got[:, 1], 1e-12))) if mapping is None else None
            fix = (f"pass --scale {_factor(suggest)} to multiply it onto the training range, or --scale auto to stretch "
                   "each band's p1-p99 onto the training p1-p99" if suggest is not None else
                   "adjust --scale, or use --scale auto to stretch each band's p1-p99 onto the training p1-p99")
            if not can_scale:
                fix = (f"rescale the images by about {_factor(suggest)} (e.g. gdal_translate -scale), or run rsseg predict "
                       "--scale on them and score with rsseg evaluate PRED REF")
            scaled = " after --scale" if mapping is not None else ""
            raise InputRasterError(
                f"input {path} ({dtype}) does not match the model's training range: band {i + 1} ({names[i]}) p99 is "
                f"{_fmt(hi_g)}{scaled} but {_fmt(hi_t)} in training ({meta.input_dtype}, p1-p99 "
                f"{_fmt(want[i, 0])}-{_fmt(hi_t)}); {fix}")
    return mapping


def check_inputs(paths: Sequence[str | Path], meta: ModelMeta, *, bands: Sequence[int] | None = None,
                 scale: float | str | None = None, reference: str | Path | None = None,
                 asset: str | None = None, allow_local_assets: bool = False) -> None:
    """Every check of the inputs ``rsseg predict`` can make before the model loads (seconds saved
    per mistake): each input readable, with the bands the model needs, in its value range
    (:func:`input_mapping`), on the reference's grid."""
    from rsseg.inference.input_checks import select_bands
    from rsseg.inference.scoring import open_reference

    for path in paths:
        with open_raster(path, asset=asset, allow_local_assets=allow_local_assets) as src:
            input_mapping(src, meta, select_bands(src, meta, list(bands) if bands else None), path, scale)
            if reference is not None:
                open_reference(reference, src).close()


def check_dataset_inputs(images: Sequence[tuple[str | Path, Sequence[int]]], meta: ModelMeta,
                         max_files: int = 16) -> None:
    """:func:`input_mapping` (no rescale option) on up to ``max_files`` dataset images
    ``(path, 1-based bands)`` spread over the list: a dataset in another value range than the
    checkpoint's training images is refused before ``evaluate -m`` loads the model."""
    images = list(images)
    step = max(1, math.ceil(len(images) / max_files))
    for path, bands in images[::step]:
        with open_raster(path, "dataset image") as src:
            input_mapping(src, meta, list(bands), path, None, can_scale=False)
