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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.windows import Window

from rsseg.checkpoint import ModelMeta
from rsseg.errors import CheckpointError, OutputPathError
from rsseg.inference.blend import argmax_confidence
from rsseg.inference.cog import CLASS_NODATA
from rsseg.inference.contract import InputMapping, input_mapping, invalid_pixels, read_error
from rsseg.inference.input_checks import check_model_fit, select_bands, warn_if_not_georeferenced
from rsseg.inference.memory import block_cache, stream_columns
from rsseg.inference.predictor import Predictor
from rsseg.inference.products import (
    AreaReportWriter,
    ClassRasterWriter,
    ConfidenceWriter,
    ProductContext,
    ProductWriter,
    Rows,
    VectorWriter,
)
from rsseg.inference.references import VectorOptions
from rsseg.inference.report import provenance
from rsseg.inference.scoring import object_class_ids
from rsseg.inference.settings import PredictSettings
from rsseg.inference.vectorize import Measure, parse_vector_classes
from rsseg.inference.windows import Span, WindowPlan
from rsseg.io import Staging, check_output, is_remote, open_raster, unfold_url, write_error
from rsseg.progress import ProgressFn

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
    #: outputs staged but not committed yet (``predict_file(stage=...)``): the caller commits them
    stage: Staging | None = None


def check_targets(input_path: Path, writers: Sequence[ProductWriter], overwrite: bool) -> None:
    """Every target of every writer, before any work: not the input, not shared, writable. Each
    writer's own checks come first, so a known clash (the polygons' style on the class raster's
    ``.qml``) is named as such rather than as two outputs on one path."""
    for writer in writers:
        writer.check()
    seen: dict[Path, str] = {}
    for writer in writers:
        for path in writer.targets():
            resolved = path.resolve()
            if resolved == input_path.resolve():
                raise OutputPathError(f"{writer.name} output {path} is the input raster; choose another output path")
            if resolved in seen:
                raise OutputPathError(f"{writer.name} and {seen[resolved]} outputs are both {path}; give them different paths")
            seen[resolved] = writer.name
            check_output(path, overwrite)


#: one input of a run and its targets: ``output_path``, ``vector_path``, ``report_path``,
#: ``confidence_path`` (``None``: not written)
Job = tuple[str, dict[str, "Path | None"]]


def _key(source: str | Path) -> str:
    """One spelling per file: a local path resolved, a URL as given."""
    return str(source) if is_remote(str(source)) else str(Path(source).resolve())


def check_jobs(jobs: Sequence[Job], overwrite: bool) -> None:
    """Every target of a run over several inputs, before any work (loading the model): two inputs
    that would write one file (same name in different folders), an input given twice, or an output
    that is another input are refused, with ``overwrite`` too; then each target as
    :func:`check_targets` checks it (named as its format, writable, not existing unless ``overwrite``,
    a style of its own). Every file a target brings counts: the class raster's ``.aux.xml`` and
    ``.qml``, the polygons' ``.qml`` and shapefile parts (the writers' targets)."""
    inputs = {_key(src): src for src, _ in jobs}
    writers: dict[str, str] = {}
    files: list[Path] = []
    for src, targets in jobs:
        if _key(src) in {_key(w) for w in writers.values()}:
            raise OutputPathError(f"input {src} is given twice; list each raster once")
        products = _Writers.build(PredictOutputs(**targets), PredictOptions()).all
        for product in products:
            product.check()
        for target in (path for product in products for path in product.targets()):
            key = _key(target)
            if key in inputs:
                raise OutputPathError(f"output {target} (for input {src}) is the input raster {inputs[key]}; "
                                      "choose another -o/--vector/--report/--confidence")
            if writers.get(key) == src:
                raise OutputPathError(f"two outputs of {src} are both {target}; give -o, --vector, --report and "
                                      "--confidence different paths")
            if key in writers:
                raise OutputPathError(f"inputs {writers[key]} and {src} would both write {target}; rename one, or "
                                      "run predict once per folder with its own -o")
            writers[key] = src
            files.append(target)
    for target in files:
        check_output(target, overwrite)


#: ``emit(rows, probs)``: one finished band of rows; ``probs`` [K, n, w] float16, or ``None`` when
#: a distributed run did not ship them (no product asked for probabilities)
EmitFn = Callable[[Rows, "np.ndarray | None"], None]


class RowSource(Protocol):
    """Computes every band of rows of ``src`` in row order, elsewhere than this process
    (:class:`rsseg.inference.distributed.StripSource`); ``device`` goes in the report header."""

    device: str

    def __call__(self, src: rasterio.DatasetReader, sel: list[int], emit: EmitFn,
                 on_progress: ProgressFn | None) -> None: ...


class Model(Protocol):
    """What ``predict_file`` needs of the model: a :class:`Predictor`, or the client's view of a
    model that runs elsewhere (:class:`rsseg.inference.distributed.RemoteModel`, with a ``rows_source``)."""

    meta: ModelMeta
    settings: PredictSettings


def predict_rows(predictor: Predictor, src: rasterio.DatasetReader, reader_src: rasterio.DatasetReader,
                 sel: list[int], emit: EmitFn, rows: Span | None = None,
                 on_progress: ProgressFn | None = None, mapping: InputMapping | None = None,
                 name: str | Path | None = None, columns: Sequence[Span] | None = None) -> None:
    """Predict the raster's row strip ``rows`` (all rows when ``None``) and ``emit`` each finished
    band, in order (per column strip of ``columns``, :meth:`Predictor.run`; default the whole width).

    ``rows`` must be a row strip of :meth:`~rsseg.inference.windows.WindowPlan.row_strips`: the
    windows of its halo (:meth:`~rsseg.inference.windows.WindowPlan.halo`) are predicted too and
    blended with the whole-raster weights, so each pixel equals the whole-raster run's up to float
    noise from a different batch composition. ``reader_src`` is a second handle on the input for
    the reader thread (GDAL datasets must not be shared between threads); ``src`` reads the nodata
    masks. Nodata and non-finite pixels (:func:`~rsseg.inference.contract.invalid_pixels`) are
    filled before normalisation (:meth:`Predictor.prepare`, after the user's ``mapping``) and come
    out as 255; a read failure is one line naming ``name`` (default the source's path).
    """
    tile, overlap = predictor.settings.tile, predictor.settings.overlap
    whole = WindowPlan(src.width, src.height, tile, overlap)
    strip = Span(0, src.height) if rows is None else rows
    halo = Span(0, src.height) if rows is None else whole.halo(rows)
    label = name if name is not None else src.name

    def read(win: Window) -> np.ndarray:
        win = Window(win.col_off, win.row_off + halo.start, win.width, win.height)
        try:
            raw = reader_src.read(sel, window=win, boundless=False)
            invalid = invalid_pixels(reader_src, sel, win, raw)
        except RasterioError as exc:
            raise read_error(exc, label, win) from None
        return predictor.prepare(raw, invalid, mapping)

    def on_band(y0: int, x0: int, probs: np.ndarray) -> None:
        y0 += halo.start
        start, stop = max(y0, strip.start), min(y0 + probs.shape[1], strip.stop)
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

    predictor.run(read, WindowPlan(src.width, halo.size, tile, overlap), on_band, on_progress, columns)


@dataclass(frozen=True)
class PredictOutputs:
    """Where :func:`predict_file` writes: the class COG and the optional products."""

    output_path: str | Path
    vector_path: str | Path | None = None
    report_path: str | Path | None = None
    confidence_path: str | Path | None = None
    #: further :class:`~rsseg.inference.products.ProductWriter` objects
    products: Sequence[ProductWriter] = ()


@dataclass(frozen=True)
class PredictOptions:
    """How :func:`predict_file` reads the input and shapes the products (its keyword arguments)."""

    reference_path: str | Path | None = None
    bands: list[int] | None = None
    #: polygon outline simplification: metres, or a string with a unit ("1px", "0.1m"); None: the default
    simplify: str | float | Measure | None = None
    #: smallest polygon: square metres, or a string with a unit ("2m2", "8px"); None: the default
    min_area: str | float | Measure | None = None
    vector_classes: str | Sequence[str | int] | None = None
    #: classes (names or ids, like vector_classes) whose polygons get right-angled outlines
    regularize: str | Sequence[str | int] | None = None
    strict: bool = False
    asset: str | None = None
    #: a STAC item's asset may name a local file (absolute path, file://, /vsizip/...)
    allow_local_assets: bool = False
    overwrite: bool = False
    scale: float | str | None = None
    buffer_mb: float | None = BUFFER_MB
    #: how a vector ``reference_path`` becomes classes (``--attribute``, ``--class``, ``--background``, ``--layer``)
    reference_attribute: str | None = None
    reference_class: str | None = None
    reference_background: str | None = None
    reference_layer: str | None = None
    #: classes scored per object against the reference (names or ids, ``none``; default the footprint classes)
    object_classes: str | Sequence[str | int] | None = None
    #: the model file the report's provenance names (file name and SHA-256); ``None``: not named
    model_path: str | Path | None = None

    def vector_reference(self) -> VectorOptions:
        """The options of a vector ``reference_path`` (flat fields here: Dask ships them as keywords)."""
        return VectorOptions(self.reference_attribute, self.reference_class, self.reference_background,
                             self.reference_layer)


@dataclass
class _Writers:
    """The product writers of one run, in the order they finish (the polygons read the class raster)."""

    classes: ClassRasterWriter
    vectors: VectorWriter | None
    report: AreaReportWriter
    all: list[ProductWriter]

    @classmethod
    def build(cls, outputs: PredictOutputs, options: PredictOptions, meta: ModelMeta | None = None) -> _Writers:
        """``meta`` reads ``options.vector_classes`` (names or ids); without them the writers need no model."""
        vector_classes = options.vector_classes
        if vector_classes is not None:  # names or ids, checked before any work
            vector_classes = parse_vector_classes(vector_classes, meta.classes)
        classes = ClassRasterWriter(outputs.output_path)
        writers: list[ProductWriter] = [classes]
        if outputs.confidence_path is not None:
            writers.append(ConfidenceWriter(outputs.confidence_path))
        writers.extend(outputs.products)
        vectors = None
        if outputs.vector_path is not None:
            regularize = None if options.regularize is None else parse_vector_classes(options.regularize, meta.classes)
            vectors = VectorWriter(outputs.vector_path, classes, options.simplify, options.min_area, vector_classes,
                                   regularize)
            writers.append(vectors)
        object_classes = (object_class_ids(options.object_classes, meta.classes)
                          if options.reference_path is not None else [])
        report = AreaReportWriter(outputs.report_path, options.reference_path, vector=options.vector_reference(),
                                  classes=classes, object_classes=object_classes)
        writers.append(report)
        return cls(classes, vectors, report, writers)


def _check_classes(meta: ModelMeta) -> None:
    if len(meta.colors) < meta.num_classes:
        raise CheckpointError(f"checkpoint metadata has {len(meta.colors)} colours for {meta.num_classes} classes")
    if meta.num_classes > CLASS_NODATA:
        raise CheckpointError(f"{meta.num_classes} classes do not fit uint8 class ids with 255 as nodata")


def predict_file(predictor: Model, input_path: str | Path, output_path: str | Path, *,
                 vector_path: str | Path | None = None, report_path: str | Path | None = None,
                 confidence_path: str | Path | None = None, products: Sequence[ProductWriter] = (),
                 on_progress: ProgressFn | None = None, rows_source: RowSource | None = None,
                 stage: Staging | None = None,
                 **options: Any) -> PredictResult:
    """Segment one raster with ``predictor`` and write the class COG and optional products.

    Output: uint8 class ids on the input's exact grid (size, CRS, transform), 255 where the input
    is nodata (all selected bands masked in ``read_masks``, or NaN/inf in any: such pixels are
    filled before normalisation and never reach the model), palette and class names, tiled,
    deflate, overviews (mode). ``confidence_path``: max probability x 255 (0 = nodata).
    ``vector_path`` (.gpkg/.shp/.geojson): polygons of ``vector_classes`` (default all but the
    background), at least ``min_area`` (m^2, or e.g. ``"8px"``; default
    :data:`~rsseg.inference.vectorize.MIN_AREA_M2`), outlines simplified by ``simplify`` (:func:`vectorize`).
    ``report_path``: JSON area report, with scores when ``reference_path`` (mask on the same grid,
    or polygons rasterised on it: the ``reference_*`` options) is given, per object for
    ``object_classes``. ``products``: further :class:`~rsseg.inference.products.ProductWriter` objects.
    ``options``: the fields of :class:`PredictOptions`, see :func:`predict_outputs`.
    ``on_progress(done, total)``: windows predicted (see :meth:`Predictor.run`). Prints nothing.
    ``stage``: the outputs are staged into it and left for the caller to commit together with
    those of other inputs (the result's ``stage``), or to discard; by default they are committed here.
    """
    outputs = PredictOutputs(output_path, vector_path, report_path, confidence_path, tuple(products))
    return predict_outputs(predictor, input_path, outputs, PredictOptions(**options), on_progress, rows_source, stage)


def predict_outputs(predictor: Model, input_path: str | Path, outputs: PredictOutputs,
                    options: PredictOptions = PredictOptions(), on_progress: ProgressFn | None = None,
                    rows_source: RowSource | None = None, stage: Staging | None = None) -> PredictResult:
    """:func:`predict_file` with its arguments grouped.

    An input unlike the model's training data (pixel size, bands: :func:`check_model_fit`) is a
    ``UserWarning``, or an error with ``options.strict``. ``input_path`` may be a URL or a STAC
    item (its ``options.asset``, default ``visual``) (:func:`rsseg.io.open_raster`).
    ``options.bands``: 1-based input bands in the model's order (default the first N).
    ``options.scale``: map the input onto the training value range (``--scale``: a factor or
    ``auto``, :func:`~rsseg.inference.contract.input_mapping`); an input in another range is refused.
    ``rows_source``: computes the bands of rows elsewhere (a Dask cluster:
    :mod:`rsseg.inference.distributed`; ``on_progress`` then counts its row strips); the writers,
    checks and atomic targets stay these ones.
    ``options.buffer_mb``: MiB for the buffers that grow with raster width (blending ring, input
    block cache); a wider raster streams in column strips, a few percent more windows
    (:func:`~rsseg.inference.memory.stream_columns`); ``None``: whole rows, however wide.
    """
    source = unfold_url(str(input_path))  # a URL keeps its '//' (Path folds it)
    input_path = Path(input_path)
    meta, tile = predictor.meta, predictor.settings.tile
    writers = _Writers.build(outputs, options, meta)
    check_targets(input_path, writers.all, options.overwrite)
    _check_classes(meta)

    with open_raster(source, asset=options.asset, allow_local_assets=options.allow_local_assets) as src, \
            block_cache(src, tile, columns := stream_columns(src, tile, meta.num_classes, options.buffer_mb)
                        if rows_source is None else None), \
            tempfile.TemporaryDirectory(prefix=f".{writers.classes.path.stem}.", dir=writers.classes.path.parent) as tmpdir:
        sel = select_bands(src, meta, options.bands)
        mapping = input_mapping(src, meta, sel, input_path, options.scale)
        warn_if_not_georeferenced(src)
        check_model_fit(src, meta, sel, explicit_bands=options.bands is not None, strict=options.strict)
        header = {"input": source, "output": str(writers.classes.path), "width": src.width, "height": src.height,
                  "crs": src.crs.to_string() if src.crs else None,
                  "device": predictor.settings.device if rows_source is None else rows_source.device,
                  "provenance": _provenance(source, predictor.settings, options)}
        ctx = ProductContext(src=src, meta=meta, tmpdir=Path(tmpdir), header=header)

        def compute(emit: EmitFn) -> None:
            if rows_source is not None:
                rows_source(src, sel, emit, on_progress)
                return
            # separate handles: GDAL datasets must not be shared between the reader and writer threads
            with open_raster(source, asset=options.asset, allow_local_assets=options.allow_local_assets) as reader_src:
                predict_rows(predictor, src, reader_src, sel, emit, on_progress=on_progress, mapping=mapping,
                             name=input_path, columns=columns)

        paths = _write_products(writers, ctx, compute, stage)
    result = _result(input_path, writers, paths)
    result.stage = stage
    return result


def _provenance(source: str, settings: PredictSettings, options: PredictOptions) -> dict[str, Any]:
    """The report's provenance (:func:`rsseg.inference.report.provenance`): the prediction settings
    and the options that shape the products."""
    def given(value: object) -> object:  # a size with its unit as the user wrote it (2m2, 8px)
        return None if value is None else str(value)

    used = {**asdict(settings), "bands": options.bands, "scale": options.scale, "min_area": given(options.min_area),
            "simplify": given(options.simplify), "vector_classes": options.vector_classes,
            "regularize": options.regularize, "strict": options.strict, "buffer_mb": options.buffer_mb,
            "asset": options.asset, "reference_attribute": options.reference_attribute,
            "reference_class": options.reference_class, "reference_background": options.reference_background,
            "reference_layer": options.reference_layer, "object_classes": options.object_classes}
    inputs = [source] if options.reference_path is None else [source, options.reference_path]
    return provenance(inputs, used, options.model_path)


def _write_products(writers: _Writers, ctx: ProductContext, compute: Callable[[EmitFn], None],
                    outside: Staging | None = None) -> dict[str, Path]:
    """Open every writer, hand it every band ``compute`` emits, finish them in order and commit
    their outputs together (into ``outside``, uncommitted, when given); on any failure abort them
    all and leave no output."""
    products: dict[str, Path] = {}
    opened: list[ProductWriter] = []
    writer: ProductWriter | None = None
    stage = outside if outside is not None else Staging()
    try:
        for writer in writers.all:
            writer.open(ctx)
            opened.append(writer)

        def emit(rows: Rows, probs: np.ndarray | None) -> None:
            for w in writers.all:
                try:
                    w.write(rows, probs)
                except Exception as exc:
                    raise (write_error(exc, w.name, w.path) or exc) from None

        compute(emit)
        for writer in writers.all:  # in order: the polygons read the finished class raster
            path = writer.finish(stage)
            opened.remove(writer)
            if path is not None:
                products[writer.name] = path
        writer = writers.classes  # a failed rename reports on the outputs as a whole
        if outside is None:
            stage.commit()  # all together, only now that every product is complete
    except BaseException as exc:
        # judged while the temporaries are still there: a disk is only full until they go
        err = write_error(exc, writer.name, writer.path) if writer is not None and isinstance(exc, Exception) else None
        for w in opened:
            w.abort()
        stage.discard()
        if err is not None:
            raise err from None
        raise
    return products


def _result(input_path: Path, writers: _Writers, products: dict[str, Path]) -> PredictResult:
    return PredictResult(
        input_path, writers.classes.path, vector_path=products.get("vector"), report_path=products.get("report"),
        confidence_path=products.get("confidence"),
        num_polygons=writers.vectors.num_polygons if writers.vectors is not None else None,
        report=writers.report.report, products=products,
        files=[t for w in writers.all for t in w.targets() if t.exists()])
