"""``predict_file``: one raster in, class COG (+ confidence, polygons, report) out, streaming.

Peak memory depends on tile, overlap, batch and class count, never on raster height: bands of at
most :data:`rsseg.inference.blend.BAND_ROWS` rows flow from the blender to the writers. The
buffers that grow with width (blending ring, input block cache) stay within ``buffer_mb``: a
wider raster streams in column strips (:func:`rsseg.inference.memory.stream_columns`).
All targets are checked before any work (and the input against the checkpoint's input contract,
:mod:`rsseg.inference.contract`); the outputs are committed together at the end or not at all, so
a failed or interrupted run leaves the old targets byte-identical and no temporary file behind.
Each output product is a writer object (:mod:`rsseg.inference.products`); this module only
reads, runs the model and hands every finished band of rows to every writer.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.windows import Window

from rsseg.errors import RsSegError
from rsseg.inference.blend import argmax_confidence
from rsseg.inference.contract import InputMapping, input_mapping, invalid_pixels, read_error
from rsseg.inference.predictor import Predictor, ProgressFn
from rsseg.inference.products import (AreaReportWriter, ClassRasterWriter, ConfidenceWriter, ProductContext,
                                      ProductWriter, Rows, VectorWriter)
from rsseg.inference.cog import CLASS_NODATA
from rsseg.inference.input_checks import check_model_fit, select_bands, warn_if_not_georeferenced
from rsseg.inference.memory import block_cache, stream_columns
from rsseg.inference.vectorize import parse_vector_classes
from rsseg.inference.windows import strip_halo
from rsseg.io import Staging, check_output, open_raster, unfold_url, write_error


#: default ``buffer_mb`` of :func:`predict_file`: whole rows up to ~28k columns (RGB, 7 classes,
#: 1024 tile); wider rasters stream in column strips, so a 32768-wide one peaks under 1 GB with
#: the ONNX engine for ~2% more windows (bench/results/predict_strips.md)
BUFFER_MB = 512


@dataclass
class PredictResult:
    """What ``predict_file`` wrote (``products``: writer name -> main path; ``files``: every file,
    sidecars and shapefile parts included), and the area report."""

    input_path: Path
    output_path: Path
    vector_path: Path | None = None
    report_path: Path | None = None
    confidence_path: Path | None = None
    num_polygons: int | None = None
    report: dict[str, Any] = field(default_factory=dict)
    products: dict[str, Path] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


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


#: ``emit(rows, probs)``: one finished band of rows; ``probs`` [K, n, w] float16, or ``None`` when
#: a distributed run did not ship them (no product asked for probabilities)
EmitFn = Callable[[Rows, "np.ndarray | None"], None]


class RowSource(Protocol):
    """Computes every band of rows of ``src`` in row order, elsewhere than this process
    (:class:`rsseg.inference.distributed.StripSource`); ``device`` goes in the report header."""

    device: str

    def __call__(self, src: rasterio.DatasetReader, sel: list[int], emit: EmitFn,
                 on_progress: ProgressFn | None) -> None: ...


def predict_rows(predictor: Predictor, src: rasterio.DatasetReader, reader_src: rasterio.DatasetReader,
                 sel: list[int], emit: EmitFn, rows: tuple[int, int] | None = None,
                 on_progress: ProgressFn | None = None, mapping: InputMapping | None = None,
                 name: str | Path | None = None, columns: Sequence[tuple[int, int]] | None = None) -> None:
    """Predict raster rows ``[a, b)`` (all rows when ``None``) and ``emit`` each finished band, in order
    (per column strip of ``columns``, :meth:`Predictor.run`; default the whole width).

    ``rows`` must be a strip of :func:`~rsseg.inference.windows.strip_plan`: the windows of its
    halo (:func:`~rsseg.inference.windows.strip_halo`) are predicted too and blended with the
    whole-raster weights, so each pixel equals the whole-raster run's up to float noise from a
    different batch composition. ``reader_src`` is a second handle on the input for the reader
    thread (GDAL datasets must not be shared between threads); ``src`` reads the nodata masks.
    Nodata and non-finite pixels (:func:`~rsseg.inference.contract.invalid_pixels`) are filled
    before normalisation (:meth:`Predictor.prepare`, after the user's ``mapping``) and come out
    as 255; a read failure is one line naming ``name`` (default the source's path).
    """
    width, height = src.width, src.height
    a, b = (0, height) if rows is None else rows
    lo, hi = (0, height) if rows is None else strip_halo(a, b, height, predictor.tile, predictor.overlap)
    label = name if name is not None else src.name

    def read(win: Window) -> np.ndarray:
        win = Window(win.col_off, win.row_off + lo, win.width, win.height)
        try:
            raw = reader_src.read(sel, window=win, boundless=False)
            invalid = invalid_pixels(reader_src, sel, win, raw)
        except RasterioError as exc:
            raise read_error(exc, label, win) from None
        return predictor.prepare(raw, invalid, mapping)

    def on_band(y0: int, x0: int, probs: np.ndarray) -> None:
        y0 += lo
        start, stop = max(y0, a), min(y0 + probs.shape[1], b)
        if start >= stop:  # halo rows: blended from part of their windows only
            return
        probs = probs[:, start - y0:stop - y0]
        cls, conf = argmax_confidence(probs)
        rows_win = Window(x0, start, probs.shape[2], probs.shape[1])
        try:
            nodata = invalid_pixels(src, sel, rows_win)
        except RasterioError as exc:
            raise read_error(exc, label, rows_win) from None
        if nodata is not None:
            cls[nodata] = CLASS_NODATA
        emit(Rows(start, cls, conf, nodata, x0), probs)

    predictor.run(read, width, hi - lo, on_band, on_progress, columns)


def predict_file(predictor: Predictor, input_path: str | Path, output_path: str | Path, *,
                 vector_path: str | Path | None = None, report_path: str | Path | None = None,
                 confidence_path: str | Path | None = None, reference_path: str | Path | None = None,
                 bands: list[int] | None = None, simplify: float = 0.0, min_area: float | None = None,
                 vector_classes: str | Sequence[str | int] | None = None, strict: bool = False,
                 asset: str | None = None,
                 overwrite: bool = False, products: Sequence[ProductWriter] = (), scale: float | str | None = None,
                 on_progress: ProgressFn | None = None, rows_source: RowSource | None = None,
                 buffer_mb: float | None = BUFFER_MB) -> PredictResult:
    """Segment one raster with ``predictor`` and write the class COG and optional products.

    Output: uint8 class ids on the input's exact grid (size, CRS, transform), 255 where the input
    is nodata (all selected bands masked in ``read_masks``, or NaN/inf in any: such pixels are
    filled before normalisation and never reach the model), palette and class names, tiled,
    deflate, overviews (mode). ``confidence_path``: max probability x 255 (0 = nodata).
    ``vector_path`` (.gpkg/.shp/.geojson): polygons of ``vector_classes`` (default all but the
    background), at least ``min_area`` m^2 (default a few pixels) (:func:`vectorize`).
    An input unlike the model's training data (pixel size, bands: :func:`check_model_fit`) is a
    ``UserWarning``, or an error with ``strict``. ``input_path`` may be a URL or a STAC item
    (its ``asset``, default ``visual``) (:func:`rsseg.io.open_raster`).
    ``report_path``: JSON area report, with scores when ``reference_path`` (mask on the same grid)
    is given. ``bands``: 1-based input bands in the model's order (default the first N).
    ``products``: further :class:`~rsseg.inference.products.ProductWriter` objects.
    ``scale``: map the input onto the training value range (``--scale``: a factor or ``auto``,
    :func:`~rsseg.inference.contract.input_mapping`); an input in another range is refused.
    ``on_progress(done, total)``: windows predicted (see :meth:`Predictor.run`). Prints nothing.
    ``rows_source``: computes the bands of rows elsewhere (a Dask cluster:
    :mod:`rsseg.inference.distributed`; ``on_progress`` then counts its strips); the writers,
    checks and atomic targets stay these ones.
    ``buffer_mb``: MiB for the buffers that grow with raster width (blending ring, input block
    cache); a wider raster streams in column strips, a few percent more windows
    (:func:`~rsseg.inference.memory.stream_columns`); ``None``: whole rows, however wide.
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
    with open_raster(source, asset=asset) as src, \
            block_cache(src, predictor.tile, columns := stream_columns(src, predictor.tile, meta.num_classes, buffer_mb)
                        if rows_source is None else None), Staging() as stage, \
            tempfile.TemporaryDirectory(prefix=f".{classes.path.stem}.", dir=classes.path.parent) as tmpdir:
        sel = select_bands(src, meta, bands)
        mapping = input_mapping(src, meta, sel, input_path, scale)
        warn_if_not_georeferenced(src)
        check_model_fit(src, meta, sel, explicit_bands=bands is not None, strict=strict)
        width, height = src.width, src.height
        header = {"input": source, "output": str(classes.path), "width": width, "height": height,
                  "crs": src.crs.to_string() if src.crs else None,
                  "device": str(predictor.device) if rows_source is None else rows_source.device}
        ctx = ProductContext(src=src, meta=meta, tmpdir=Path(tmpdir), header=header)
        # separate handles: GDAL datasets must not be shared between the reader and writer threads
        reader_src = open_raster(source, asset=asset)
        opened: list[ProductWriter] = []
        writer: ProductWriter | None = None
        try:
            for writer in writers:
                writer.open(ctx)
                opened.append(writer)

            def emit(rows: Rows, probs: np.ndarray | None) -> None:
                for w in writers:
                    try:
                        w.write(rows, probs)
                    except Exception as exc:
                        raise (write_error(exc, w.name, w.path) or exc) from None

            if rows_source is None:
                predict_rows(predictor, src, reader_src, sel, emit, on_progress=on_progress, mapping=mapping,
                             name=input_path, columns=columns)
            else:
                rows_source(src, sel, emit, on_progress)
            for writer in writers:  # in order: the polygons read the finished class raster
                path = writer.finish(stage)
                opened.remove(writer)
                if path is not None:
                    result.products[writer.name] = path
            writer = classes  # a failed rename reports on the outputs as a whole
            stage.commit()  # all together, only now that every product is complete
            result.files = [t for w in writers for t in w.targets() if t.exists()]
        except BaseException as exc:
            for w in opened:
                w.abort()
            stage.discard()
            err = write_error(exc, writer.name, writer.path) if writer is not None and isinstance(exc, Exception) else None
            if err is not None:
                raise err from None
            raise
        finally:
            reader_src.close()

    result.confidence_path = result.products.get("confidence")
    result.vector_path = result.products.get("vector")
    result.report_path = result.products.get("report")
    result.num_polygons = vectors.num_polygons if vectors is not None else None
    result.report = report.report
    return result
