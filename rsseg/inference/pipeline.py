"""``predict_file``: one raster in, class COG (+ confidence, polygons, report) out, streaming.

Peak memory depends on tile, overlap, batch, class count and raster width only (see
:mod:`rsseg.inference.blend`), never on raster height: bands of at most
:data:`rsseg.inference.blend.BAND_ROWS` rows flow from the blender to the writers. All targets are checked before any work;
each is written atomically, so an interrupted run leaves nothing half-written at a target.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.enums import MaskFlags
from rasterio.windows import Window
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from rsseg.errors import RsSegError
from rsseg.inference.areas import AreaModel
from rsseg.inference.blend import argmax_confidence, confidence_u8
from rsseg.inference.predictor import Predictor
from rsseg.inference.raster import (CLASS_NODATA, CONFIDENCE_NODATA, RowWriter, block_cache, describe_classes,
                                    open_input, select_bands, tiled_profile, to_cog, warn_if_not_georeferenced)
from rsseg.inference.report import AreaAccumulator, open_reference
from rsseg.inference.vectorize import SHAPEFILE_PARTS, vector_driver, vectorize
from rsseg.io import check_output, write_json


@dataclass
class PredictResult:
    """What ``predict_file`` wrote, and the area report (also written to ``report_path`` if given)."""

    input_path: Path
    output_path: Path
    vector_path: Path | None = None
    report_path: Path | None = None
    confidence_path: Path | None = None
    num_polygons: int | None = None
    report: dict[str, Any] = field(default_factory=dict)


class _MPixColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed / 1e6:6.2f} MPix/s" if speed else "    -- MPix/s", style="progress.data.speed")


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                    _MPixColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=Console(file=sys.stderr), disable=not enabled, transient=False)


def _check_targets(input_path: Path, targets: dict[str, Path | None], overwrite: bool) -> None:
    seen: dict[Path, str] = {}
    for name, path in targets.items():
        if path is None:
            continue
        resolved = path.resolve()
        if resolved == input_path.resolve():
            raise RsSegError(f"{name} {path} is the input raster; choose another output path")
        if resolved in seen:
            raise RsSegError(f"{name} and {seen[resolved]} are both {path}; give them different paths")
        seen[resolved] = name
        check_output(path, overwrite)
        if name == "vector_path":
            vector_driver(path)
            if path.suffix.lower() == ".shp":
                for ext in SHAPEFILE_PARTS:
                    check_output(path.with_suffix(ext), overwrite)


def predict_file(predictor: Predictor, input_path: str | Path, output_path: str | Path, *,
                 vector_path: str | Path | None = None, report_path: str | Path | None = None,
                 confidence_path: str | Path | None = None, reference_path: str | Path | None = None,
                 bands: list[int] | None = None, simplify: float = 0.0, min_area: float = 0.0,
                 overwrite: bool = False, progress: bool = True) -> PredictResult:
    """Segment one raster with ``predictor`` and write the class COG and optional products.

    Output: uint8 class ids on the input's exact grid (size, CRS, transform), 255 where the input
    is nodata (all selected bands masked in ``read_masks``), palette and class names, tiled,
    deflate, overviews (mode). ``confidence_path``: max probability x 255 (0 = nodata).
    ``vector_path`` (.gpkg/.shp/.geojson): polygons per class (:func:`vectorize`).
    ``report_path``: JSON area report, with IoU/F1 when ``reference_path`` (mask on the same grid)
    is given. ``bands``: 1-based input bands in the model's order (default the first N).
    """
    input_path, output_path = Path(input_path), Path(output_path)
    opt = {"vector_path": vector_path, "report_path": report_path, "confidence_path": confidence_path}
    targets = {"output_path": output_path, **{k: Path(v) if v is not None else None for k, v in opt.items()}}
    _check_targets(input_path, targets, overwrite)
    meta = predictor.meta
    if len(meta.colors) < meta.num_classes:
        raise RsSegError(f"checkpoint metadata has {len(meta.colors)} colours for {meta.num_classes} classes")
    if meta.num_classes > CLASS_NODATA:
        raise RsSegError(f"{meta.num_classes} classes do not fit uint8 class ids with 255 as nodata")

    console = Console(file=sys.stderr, quiet=not progress)
    with open_input(input_path) as src, block_cache(src, predictor.tile), tempfile.TemporaryDirectory(prefix=f".{output_path.stem}.",
                                                                    dir=output_path.parent) as tmpdir:
        sel = select_bands(src, meta, bands)
        warn_if_not_georeferenced(src)
        ref = open_reference(reference_path, src.width, src.height) if reference_path else None
        width, height = src.width, src.height
        console.print(f"[bold]{input_path.name}[/]: {width}x{height} px, bands {sel}, device {predictor.device}, "
                      f"tile {predictor.tile}/{predictor.overlap}, batch {predictor.batch}, tta {predictor.tta}")
        report_acc = AreaAccumulator(meta.classes, AreaModel(src.transform, src.crs, width, height),
                                     with_reference=ref is not None)
        tmp_cls = Path(tmpdir) / "classes.tif"
        tmp_conf = Path(tmpdir) / "confidence.tif"
        # separate handles: GDAL datasets must not be shared between the reader and writer threads
        reader_src = rasterio.open(src.name)
        try:
            with rasterio.open(tmp_cls, "w", **tiled_profile(src, CLASS_NODATA)) as dst_cls, \
                    (rasterio.open(tmp_conf, "w", **tiled_profile(src, CONFIDENCE_NODATA)) if confidence_path
                     else contextlib.nullcontext()) as dst_conf, _progress(progress) as bar:
                describe_classes(dst_cls, meta)
                cls_writer = RowWriter(dst_cls)
                conf_writer = RowWriter(dst_conf) if dst_conf is not None else None
                task = bar.add_task(input_path.name, total=width * height)

                # reading masks costs a band read; skip it when GDAL says every pixel is valid
                all_valid = all(MaskFlags.all_valid in src.mask_flag_enums[b - 1] for b in sel)

                def read(win: Window) -> np.ndarray:
                    return predictor.normalise(reader_src.read(sel, window=win, boundless=False))

                def on_band(y0: int, probs: torch.Tensor) -> None:
                    n = probs.shape[1]
                    rows = Window(0, y0, width, n)
                    cls_t, conf = argmax_confidence(probs)
                    cls = cls_t.numpy()
                    nodata = None if all_valid else (src.read_masks(sel, window=rows) == 0).all(axis=0)
                    if nodata is not None:
                        cls[nodata] = CLASS_NODATA
                    cls_writer.write(y0, cls)
                    if conf_writer is not None:
                        c8 = confidence_u8(conf).numpy()
                        if nodata is not None:
                            c8[nodata] = CONFIDENCE_NODATA
                        conf_writer.write(y0, c8)
                    report_acc.update(y0, cls, ref.read(1, window=rows) if ref is not None else None)
                    bar.advance(task, n * width)

                predictor.run(read, width, height, on_band)
            to_cog(tmp_cls, output_path, "mode")
            if confidence_path:
                to_cog(tmp_conf, confidence_path, "average")
        finally:
            reader_src.close()
            if ref is not None:
                ref.close()

    report = {"input": str(input_path), "output": str(output_path), "width": width, "height": height,
              "crs": src.crs.to_string() if src.crs else None, "device": str(predictor.device), **report_acc.result()}
    result = PredictResult(input_path, output_path, confidence_path=targets["confidence_path"], report=report)
    if vector_path is not None:
        result.num_polygons = vectorize(output_path, vector_path, meta.classes, simplify=simplify, min_area=min_area)
        result.vector_path = Path(vector_path)
    if report_path is not None:
        result.report_path = write_json(report_path, report)
    return result

