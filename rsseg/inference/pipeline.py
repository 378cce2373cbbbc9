"""``predict_file``: one raster in, class COG (+ confidence, polygons, report) out, streaming.

Peak memory depends on tile, overlap, batch, class count and raster width only (see
:mod:`rsseg.inference.blend`), never on raster height: bands of at most
:data:`rsseg.inference.blend.BAND_ROWS` rows flow from the blender to the writers. All targets are checked before any work;
each is written atomically, so an interrupted run leaves nothing half-written at a target.
Each output product is a writer object (:mod:`rsseg.inference.products`); this module only
reads, runs the model and hands every finished band of rows to every writer.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rasterio.enums import MaskFlags
from rasterio.windows import Window

from rsseg.errors import RsSegError
from rsseg.inference.blend import argmax_confidence
from rsseg.inference.predictor import Predictor, ProgressFn
from rsseg.inference.products import (AreaReportWriter, ClassRasterWriter, ConfidenceWriter, ProductContext,
                                      ProductWriter, Rows, VectorWriter)
from rsseg.inference.raster import (CLASS_NODATA, block_cache, check_model_fit, select_bands,
                                   warn_if_not_georeferenced)
from rsseg.inference.vectorize import parse_vector_classes
from rsseg.io import open_raster, unfold_url
from rsseg.io import check_output


@dataclass
class PredictResult:
    """What ``predict_file`` wrote (``products``: writer name -> path), and the area report."""

    input_path: Path
    output_path: Path
    vector_path: Path | None = None
    report_path: Path | None = None
    confidence_path: Path | None = None
    num_polygons: int | None = None
    report: dict[str, Any] = field(default_factory=dict)
    products: dict[str, Path] = field(default_factory=dict)


def check_targets(input_path: Path, writers: Sequence[ProductWriter], overwrite: bool) -> None:
    """Every target of every writer, before any work: not the input, not shared, writable."""
    seen: dict[Path, str] = {}
    for writer in writers:
        for path in writer.targets():
            resolved = path.resolve()
            if resolved == input_path.resolve():
                raise RsSegError(f"{writer.name} output {path} is the input raster; choose another output path")
            if resolved in seen:
                raise RsSegError(f"{writer.name} and {seen[resolved]} outputs are both {path}; give them different paths")
            seen[resolved] = writer.name
            check_output(path, overwrite)
        writer.check()


def predict_file(predictor: Predictor, input_path: str | Path, output_path: str | Path, *,
                 vector_path: str | Path | None = None, report_path: str | Path | None = None,
                 confidence_path: str | Path | None = None, reference_path: str | Path | None = None,
                 bands: list[int] | None = None, simplify: float = 0.0, min_area: float | None = None,
                 vector_classes: str | Sequence[str | int] | None = None, strict: bool = False,
                 asset: str | None = None,
                 overwrite: bool = False, products: Sequence[ProductWriter] = (),
                 on_progress: ProgressFn | None = None) -> PredictResult:
    """Segment one raster with ``predictor`` and write the class COG and optional products.

    Output: uint8 class ids on the input's exact grid (size, CRS, transform), 255 where the input
    is nodata (all selected bands masked in ``read_masks``), palette and class names, tiled,
    deflate, overviews (mode). ``confidence_path``: max probability x 255 (0 = nodata).
    ``vector_path`` (.gpkg/.shp/.geojson): polygons of ``vector_classes`` (default all but the
    background), at least ``min_area`` m^2 (default a few pixels) (:func:`vectorize`).
    An input unlike the model's training data (pixel size, bands: :func:`check_model_fit`) is a
    ``UserWarning``, or an error with ``strict``. ``input_path`` may be a URL or a STAC item
    (its ``asset``, default ``visual``) (:func:`rsseg.io.open_raster`).
    ``report_path``: JSON area report, with scores when ``reference_path`` (mask on the same grid)
    is given. ``bands``: 1-based input bands in the model's order (default the first N).
    ``products``: further :class:`~rsseg.inference.products.ProductWriter` objects.
    ``on_progress(done, total)``: windows predicted (see :meth:`Predictor.run`). Prints nothing.
    """
    source = unfold_url(str(input_path))  # a URL keeps its '//' (Path folds it)
    input_path = Path(input_path)
    if vector_classes is not None:  # names or ids, checked before any work
        vector_classes = parse_vector_classes(vector_classes, predictor.meta.classes)
    classes = ClassRasterWriter(output_path)
    writers: list[ProductWriter] = [classes]
    if confidence_path is not None:
        writers.append(ConfidenceWriter(confidence_path))
    writers.extend(products)
    vectors = VectorWriter(vector_path, classes, simplify, min_area, vector_classes) if vector_path is not None else None
    if vectors is not None:
        writers.append(vectors)
    report = AreaReportWriter(report_path, reference_path)
    writers.append(report)
    check_targets(input_path, writers, overwrite)
    meta = predictor.meta
    if len(meta.colors) < meta.num_classes:
        raise RsSegError(f"checkpoint metadata has {len(meta.colors)} colours for {meta.num_classes} classes")
    if meta.num_classes > CLASS_NODATA:
        raise RsSegError(f"{meta.num_classes} classes do not fit uint8 class ids with 255 as nodata")

    result = PredictResult(input_path, classes.path)
    with open_raster(source, asset=asset) as src, block_cache(src, predictor.tile), \
            tempfile.TemporaryDirectory(prefix=f".{classes.path.stem}.", dir=classes.path.parent) as tmpdir:
        sel = select_bands(src, meta, bands)
        warn_if_not_georeferenced(src)
        check_model_fit(src, meta, sel, explicit_bands=bands is not None, strict=strict)
        width, height = src.width, src.height
        header = {"input": source, "output": str(classes.path), "width": width, "height": height,
                  "crs": src.crs.to_string() if src.crs else None, "device": str(predictor.device)}
        ctx = ProductContext(src=src, meta=meta, tmpdir=Path(tmpdir), header=header)
        # separate handles: GDAL datasets must not be shared between the reader and writer threads
        reader_src = open_raster(source, asset=asset)
        opened: list[ProductWriter] = []
        try:
            for writer in writers:
                writer.open(ctx)
                opened.append(writer)
            # reading masks costs a band read; skip it when GDAL says every pixel is valid
            all_valid = all(MaskFlags.all_valid in src.mask_flag_enums[b - 1] for b in sel)

            def read(win: Window) -> np.ndarray:
                return predictor.normalise(reader_src.read(sel, window=win, boundless=False))

            def on_band(y0: int, probs: torch.Tensor) -> None:
                cls_t, conf = argmax_confidence(probs)
                cls = cls_t.numpy()
                rows_win = Window(0, y0, width, probs.shape[1])
                nodata = None if all_valid else (src.read_masks(sel, window=rows_win) == 0).all(axis=0)
                if nodata is not None:
                    cls[nodata] = CLASS_NODATA
                rows = Rows(y0, cls, conf, nodata)
                for writer in writers:
                    writer.write(rows, probs)

            predictor.run(read, width, height, on_band, on_progress)
            for writer in writers:  # in order: the polygons read the finished class raster
                path = writer.close()
                opened.remove(writer)
                if path is not None:
                    result.products[writer.name] = path
        except BaseException:
            for writer in opened:
                writer.abort()
            raise
        finally:
            reader_src.close()

    result.confidence_path = result.products.get("confidence")
    result.vector_path = result.products.get("vector")
    result.report_path = result.products.get("report")
    result.num_polygons = vectors.num_polygons if vectors is not None else None
    result.report = report.report
    return result
