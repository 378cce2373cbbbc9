"""Checks of an input raster against the checkpoint before any work: which bands feed the model,
and whether the input looks like the model's training data (pixel size, band names, alpha bands).

The value-range side of the input contract is :mod:`rsseg.inference.contract`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import rasterio
import rasterio.enums

from rsseg.checkpoint import ModelMeta
from rsseg.errors import ConfigError, InputFitWarning, InputRasterError, NotGeoreferencedWarning


def select_bands(src: rasterio.DatasetReader, meta: ModelMeta, bands: list[int] | None) -> list[int]:
    """1-based band indexes to feed the model, in the model's band order."""
    need = meta.in_channels
    if bands is None:
        if src.count < need:
            raise InputRasterError(f"{src.name} has {src.count} band(s) but the model needs {need} "
                                   f"({', '.join(meta.bands)}); pass --bands with {need} band indexes")
        return list(range(1, need + 1))
    bands = [int(b) for b in bands]
    if len(bands) != need:
        raise ConfigError(f"--bands lists {len(bands)} band(s) but the model needs {need} ({', '.join(meta.bands)})")
    bad = [b for b in bands if not 1 <= b <= src.count]
    if bad:
        raise ConfigError(f"--bands {bad} out of range: {src.name} has bands 1..{src.count}")
    return bands


#: the input's pixel size may differ from the checkpoint's gsd by up to this factor without a warning
RESOLUTION_TOLERANCE = 2.0
#: beyond this factor resampling the input to the model's gsd would invent (or throw away) most of the
#: detail: the warning says the model does not fit the data instead of suggesting a resampling
RESAMPLE_LIMIT = 4.0


def resolution_problem(name: str, pixel: float, gsd: float) -> str:
    """The sentence for an input of ``pixel`` m pixels given to a model trained on ``gsd`` m pixels:
    within :data:`RESAMPLE_LIMIT` what to resample to; beyond it, that the model does not fit the data
    (a 300 m scene resampled for a 7.5 cm model would be 4,000x upsampled: detail made up, not seen)."""
    ratio = pixel / gsd
    factor = max(ratio, 1 / ratio)
    times = f"{factor:,.0f}x" if factor >= 10 else f"{factor:.3g}x"
    said = (f"{name} has {pixel:.3g} m pixels but the model was trained on {gsd:.3g} m pixels "
            f"({times} {'coarser' if ratio > 1 else 'finer'})")
    if factor <= RESAMPLE_LIMIT:
        return (f"{said}, so its classes and areas are unreliable; resample the input to {gsd:.3g} m pixels "
                f"(gdalwarp -tr {gsd:.3g} {gsd:.3g}, in a metre-based CRS) or use a model trained near {pixel:.3g} m")
    resampling = "would invent detail the scene does not hold" if ratio > 1 else "would throw away most of its detail"
    return (f"{said}: the model does not fit this data, and resampling {times} {resampling}; use a model trained on "
            f"pixels near {pixel:.3g} m, or train one on such data (rsseg train)")


def model_fit_problems(src: rasterio.DatasetReader, meta: ModelMeta, bands: list[int],
                       explicit_bands: bool = False) -> list[str]:
    """Ways the input does not look like the model's training data, one sentence each.

    - pixel size (metres, geodesic at the raster's centre, so geographic CRSs count too) more than
      :data:`RESOLUTION_TOLERANCE` times finer or coarser than the checkpoint's ``gsd`` (up to
      :data:`RESAMPLE_LIMIT`: resample, with the numbers; beyond: the model does not fit the data);
    - band descriptions of the selected ``bands`` (1-based) that name other bands than the model's;
    - an alpha band fed to the model;
    - more bands than the model reads, when the caller did not choose them (``explicit_bands``).
    Nothing is checked that the input does not state (no CRS: no pixel size; no descriptions).
    """
    from rsseg.inference.areas import AreaModel

    name = Path(src.name).name
    problems = []
    if meta.gsd and src.crs is not None:
        pixel = AreaModel(src.transform, src.crs, src.width, src.height).pixel_size_m()
        if not 1 / RESOLUTION_TOLERANCE <= pixel / meta.gsd <= RESOLUTION_TOLERANCE:
            problems.append(resolution_problem(name, pixel, meta.gsd))
    described = [(src.descriptions[b - 1] or "").strip() for b in bands]
    if all(described) and [d.lower() for d in described] != [b.lower() for b in meta.bands]:
        problems.append(f"{name} bands {', '.join(map(str, bands))} are described as {', '.join(described)} but the model "
                        f"reads them as {', '.join(meta.bands)}; pass --bands to pick them in that order")
    alpha = [b for b in bands if src.colorinterp[b - 1] == rasterio.enums.ColorInterp.alpha]
    if alpha:
        problems.append(f"band(s) {', '.join(map(str, alpha))} of {name} are alpha (transparency) bands but the model "
                        f"reads them as image bands ({', '.join(meta.bands)}); pass --bands to skip them")
    extra = [b for b in range(1, src.count + 1) if b not in bands
             and src.colorinterp[b - 1] != rasterio.enums.ColorInterp.alpha]
    if extra and not explicit_bands:
        problems.append(f"{name} has {src.count} bands; the model reads bands {', '.join(map(str, bands))} as "
                        f"{', '.join(meta.bands)} and ignores band(s) {', '.join(map(str, extra))}; "
                        "pass --bands if those are not the right ones")
    return problems


def check_model_fit(src: rasterio.DatasetReader, meta: ModelMeta, bands: list[int], explicit_bands: bool = False,
                    strict: bool = False) -> list[str]:
    """:func:`model_fit_problems` as ``UserWarning``s, or an :class:`InputRasterError` with ``strict``."""
    problems = model_fit_problems(src, meta, bands, explicit_bands)
    if strict and problems:
        raise InputRasterError("; ".join(problems) + " (refused because of --strict)")
    for problem in problems:
        warnings.warn(problem, InputFitWarning, stacklevel=3)
    return problems


def warn_if_not_georeferenced(src: rasterio.DatasetReader) -> None:
    if src.crs is None:
        warnings.warn(f"{src.name} has no CRS: outputs keep its pixel grid but are not georeferenced, "
                      "and areas assume map units are metres", NotGeoreferencedWarning, stacklevel=3)
