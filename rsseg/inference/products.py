"""Output products of ``predict_file`` as writer objects.

Every product (class raster, confidence raster, polygons, area report, or a new one such as a
probability or entropy raster) is one :class:`ProductWriter` subclass with the life cycle

``targets()`` / ``check()``  before any work: the paths it will write, and product-specific checks;
``open(ctx)``                before the first band (main thread);
``write(rows, probs)``       once per finished band of rows, in row order (the blender thread); a
                             raster wider than the memory budget comes as column strips
                             (``rows.x0``), left to right, each top to bottom;
``finish(stage)``            after the last band: complete the product in temporary files beside
                             its targets, handed out by ``stage`` (:class:`rsseg.io.Staging`);
``abort()``                  on any failure: release handles, never touching the target.

All or nothing: ``predict_file`` finishes the writers in list order (a writer that reads another's
finished file, the polygons reading the class raster, comes after it) and only when every one is
complete commits them together (``stage.commit()``: renames). A failure at any stage (disk full
while writing the polygons) discards every temporary file and leaves the old targets byte-identical.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from rsseg.checkpoint import ModelMeta
from rsseg.errors import ConfigError, OutputPathError
from rsseg.inference.areas import AreaModel
from rsseg.inference.blend import confidence_u8
from rsseg.inference.cog import (
    CLASS_NODATA,
    COG_SUFFIXES,
    CONFIDENCE_NODATA,
    RowWriter,
    describe_classes,
    describe_confidence,
    tiled_profile,
    to_cog,
)
from rsseg.inference.references import VectorOptions, VectorReference
from rsseg.inference.report import AreaAccumulator
from rsseg.inference.scoring import ConfusionAccumulator, open_reference, score_objects, score_report
from rsseg.inference.styles import class_alphas, class_raster_sidecars, raster_sidecar_paths, vector_qml
from rsseg.inference.vectorize import (
    SHAPEFILE_PARTS,
    Measure,
    default_vector_classes,
    parse_area,
    parse_length,
    polygonize,
    require_regularizer,
    style_path,
    vector_driver,
    write_vector,
)
from rsseg.io import Staging, check_suffix, write_json


@dataclass
class ProductContext:
    """What a writer may know when it opens: the input raster, the model metadata, a temporary
    folder beside the class raster target, and the report header (input, size, CRS, device, provenance)."""

    src: rasterio.DatasetReader
    meta: ModelMeta
    tmpdir: Path
    header: dict[str, Any] = field(default_factory=dict)


@dataclass
class Rows:
    """One finished band of rows from raster row ``y0`` and column ``x0`` (0 unless the raster
    streams in column strips): class ids [n, w] uint8 (255 on nodata), max probability [n, w],
    and the input's nodata mask [n, w] bool (``None`` when every pixel is valid)."""

    y0: int
    classes: np.ndarray
    confidence: np.ndarray
    nodata: np.ndarray | None
    x0: int = 0

    @property
    def window(self) -> Window:
        return Window(self.x0, self.y0, self.classes.shape[1], self.classes.shape[0])


class ProductWriter:
    """Base class of output products; see the module docstring. ``name`` keys ``PredictResult.products``."""

    name = "product"
    #: the endings its file may have (empty: any), the option that names it on the command line
    #: and what the file is, for the refusal of another name (:meth:`check_name`)
    suffixes: tuple[str, ...] = ()
    option: str | None = None
    kind = ""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None

    @classmethod
    def check_name(cls, path: str | Path) -> None:
        """Refuse a file name other than the product's format (:attr:`suffixes`), before any work."""
        if cls.suffixes:
            check_suffix(path, cls.suffixes, cls.option or f"{cls.name} output", cls.kind)

    def targets(self) -> list[Path]:
        """Every file this product writes (checked against --overwrite before any work)."""
        return [self.path] if self.path is not None else []

    def check(self) -> None:
        """Product-specific checks before any work; by default the file's name (:meth:`check_name`)."""
        if self.path is not None:
            self.check_name(self.path)

    def open(self, ctx: ProductContext) -> None:
        self.ctx = ctx

    def write(self, rows: Rows, probs: np.ndarray) -> None:
        """``probs``: blended probabilities [K, n, w] float16 of the same pixels (``rows.window``)."""

    def finish(self, stage: Staging) -> Path | None:
        """Complete the product in ``stage``'s temporary paths; return the target it will have
        once committed (``None``: nothing written)."""
        return self.path

    def abort(self) -> None:
        """Release resources after a failure; the target is never touched."""


class RasterWriter(ProductWriter):
    """A single-band uint8 raster on the input's grid, streamed to a tiled GeoTIFF in the
    temporary folder and copied to a COG at the target. Subclasses say what goes in a band."""

    nodata = CLASS_NODATA
    resampling = "average"
    suffixes = COG_SUFFIXES
    kind = "it is written as a Cloud-Optimized GeoTIFF"

    def values(self, rows: Rows, probs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self, dst: rasterio.io.DatasetWriter) -> None:
        """Tags, palette, band description of the temporary raster (copied into the COG)."""

    def sidecar_paths(self) -> list[Path]:
        """Files written with the raster (GDAL PAM, QGIS style), part of :meth:`targets`."""
        return []

    def sidecars(self) -> dict[Path, str]:
        """Text of each of :meth:`sidecar_paths`, made when the raster is finished."""
        return {}

    def targets(self) -> list[Path]:
        return [self.path, *self.sidecar_paths()]

    def open(self, ctx: ProductContext) -> None:
        super().open(ctx)
        self.tmp = ctx.tmpdir / f"{self.name}.tif"
        self.dst = rasterio.open(self.tmp, "w", **tiled_profile(ctx.src, self.nodata))
        self.describe(self.dst)
        self.rows = RowWriter(self.dst)

    def write(self, rows: Rows, probs: np.ndarray) -> None:
        self.rows.write(rows.window, self.values(rows, probs))

    def finish(self, stage: Staging) -> Path:
        self.dst.close()
        self.dst = None
        sidecars = {stage.path(path): text for path, text in self.sidecars().items()}
        #: the complete COG before the commit (the polygons are traced from it)
        self.staged = to_cog(self.tmp, stage.path(self.path), self.resampling, sidecars)
        return self.path

    def abort(self) -> None:
        if getattr(self, "dst", None) is not None:
            self.dst.close()


class ClassRasterWriter(RasterWriter):
    """uint8 class ids, 255 on input nodata, with palette and class names; overviews by mode."""

    name = "classes"
    resampling = "mode"
    option = "-o"
    kind = "the class raster is a Cloud-Optimized GeoTIFF"

    def describe(self, dst: rasterio.io.DatasetWriter) -> None:
        describe_classes(dst, self.ctx.meta)

    def sidecar_paths(self) -> list[Path]:
        """``<raster>.aux.xml`` (category names + attribute table) and ``<stem>.qml`` (QGIS style)."""
        return list(raster_sidecar_paths(self.path))

    def sidecars(self) -> dict[Path, str]:
        return class_raster_sidecars(self.path, self.ctx.meta.classes, self.ctx.meta.colors)

    def values(self, rows: Rows, probs: np.ndarray) -> np.ndarray:
        return rows.classes


class ConfidenceWriter(RasterWriter):
    """Max probability x 255 as uint8 (>= 255 / K >= 1, so 0 is free for nodata); its scale
    (1/255) and offset are in the metadata, so GDAL and QGIS show probabilities 0..1."""

    name = "confidence"
    nodata = CONFIDENCE_NODATA
    option = "--confidence"
    kind = "the confidence raster is a Cloud-Optimized GeoTIFF"

    def describe(self, dst: rasterio.io.DatasetWriter) -> None:
        describe_confidence(dst)

    def values(self, rows: Rows, probs: np.ndarray) -> np.ndarray:
        c8 = confidence_u8(rows.confidence)
        if rows.nodata is not None:
            c8[rows.nodata] = CONFIDENCE_NODATA
        return c8


class VectorWriter(ProductWriter):
    """Polygons per class (.gpkg/.shp/.geojson) traced from the finished class raster, with a
    QGIS style in the class colours (inside a GeoPackage, else a ``.qml`` beside the file).

    ``vector_classes``: class ids to polygonise (default :func:`default_vector_classes`: all but
    the background); ``min_area`` (m^2, or e.g. ``"8px"``) and ``simplify`` (metres, or e.g.
    ``"1px"``): see :func:`polygonize` (``None``: its defaults); ``regularize``: class ids given
    right-angled outlines (building footprints; the optional ``regularize`` extra). What was
    applied goes into the report header under ``polygons`` (the report writer finishes after this one).
    """

    name = "vector"

    def __init__(self, path: str | Path, classes: ClassRasterWriter, simplify: str | float | Measure | None = None,
                 min_area: str | float | Measure | None = None, vector_classes: list[int] | None = None,
                 regularize: list[int] | None = None) -> None:
        super().__init__(path)
        self.classes, self.simplify, self.min_area = classes, simplify, min_area
        self.vector_classes, self.regularize = vector_classes, list(regularize or [])
        self.num_polygons: int | None = None

    def targets(self) -> list[Path]:
        style = style_path(self.path)
        extra = [style] if style is not None else []
        if self.path.suffix.lower() == ".shp":
            return [self.path.with_suffix(ext) for ext in SHAPEFILE_PARTS] + extra
        return [self.path] + extra

    def check(self) -> None:
        """A known format, valid sizes, the regulariser when asked for, and a style file of its own:
        QGIS loads a style by itself only from ``<stem>.qml``, so polygons sharing the class
        raster's stem would need its ``.qml`` too."""
        self.check_name(self.path)
        if self.min_area is not None:
            parse_area(self.min_area)
        if self.simplify is not None:
            parse_length(self.simplify)
        if self.regularize:
            require_regularizer()
        style = style_path(self.path)
        if style is not None and style.resolve() in {p.resolve() for p in self.classes.targets()}:
            raise OutputPathError(
                f"the class raster {self.classes.path} and the polygons {self.path} would both need the QGIS style "
                f"{style}; give the polygons a name of their own (e.g. --vector "
                f"{self.path.with_name(self.path.stem + '_polygons' + self.path.suffix)}) or write a .gpkg, which "
                "keeps its style inside")

    @classmethod
    def check_name(cls, path: str | Path) -> None:
        vector_driver(path)  # .gpkg, .shp or .geojson

    def _chosen(self) -> list[int]:
        meta = self.ctx.meta
        if self.vector_classes is not None:
            return self.vector_classes
        return default_vector_classes(meta.classes, meta.config.get("dataset", {}).get("name"))

    def open(self, ctx: ProductContext) -> None:
        super().open(ctx)
        if missing := [ctx.meta.classes[i] for i in self.regularize if i not in self._chosen()]:
            raise ConfigError(f"--regularize {','.join(missing)}: not among the polygonised classes; "
                              "add it to --vector-classes or leave it out of --regularize")

    def finish(self, stage: Staging) -> Path:
        meta = self.ctx.meta
        chosen = self._chosen()
        alphas = class_alphas(meta.classes)  # the model's, not the chosen subset's: as in the raster style
        style = vector_qml([meta.classes[i] for i in chosen], [meta.colors[i] for i in chosen], [alphas[i] for i in chosen])
        gdf = polygonize(self.classes.staged, meta.classes, simplify=self.simplify, min_area=self.min_area,
                         classes=chosen, regularize=self.regularize)
        write_vector(gdf, self.path, style=style, stage=stage)
        self.num_polygons = len(gdf)
        self.ctx.header["polygons"] = {"count": len(gdf), **gdf.attrs["polygons"]}
        return self.path


class AreaReportWriter(ProductWriter):
    """Per-class pixels and geodesic areas; with a reference (a mask on the same grid, or a vector
    file rasterised on it with ``vector``), the scores of :mod:`rsseg.inference.scoring` under
    ``metrics``, and the per-object scores of ``object_classes`` (class ids) traced from the
    finished ``classes`` raster under ``metrics["objects"]``. Always kept in memory (``report``)
    for the caller; written as JSON when it has a path."""

    name = "report"
    suffixes = (".json",)
    option = "--report"
    kind = "the area report is JSON"

    def __init__(self, path: str | Path | None = None, reference_path: str | Path | None = None, *,
                 vector: VectorOptions | None = None, classes: ClassRasterWriter | None = None,
                 object_classes: list[int] | None = None) -> None:
        super().__init__(path)
        self.reference_path = reference_path
        self.vector, self.classes, self.object_classes = vector, classes, object_classes or []
        self.ref: rasterio.DatasetReader | VectorReference | None = None
        self.report: dict[str, Any] = {}

    def open(self, ctx: ProductContext) -> None:
        super().open(ctx)
        src = ctx.src
        self.areas = AreaAccumulator(ctx.meta.classes, AreaModel(src.transform, src.crs, src.width, src.height))
        self.scores = None
        if self.reference_path is not None:
            self.ref = open_reference(self.reference_path, src, class_names=ctx.meta.classes, vector=self.vector)
            self.scores = ConfusionAccumulator(ctx.meta.num_classes, ignore_index=ctx.meta.ignore_index,
                                               reference_nodata=self.ref.nodata, prediction_nodata=CLASS_NODATA,
                                               reference_name=f"reference {self.reference_path}")

    def write(self, rows: Rows, probs: np.ndarray) -> None:
        self.areas.update(rows.y0, rows.classes)
        if self.scores is not None:
            self.scores.update(rows.classes, self.ref.read(1, window=rows.window))

    def finish(self, stage: Staging) -> Path | None:
        self.report = {**self.ctx.header, **self.areas.result()}
        if self.scores is not None:
            metrics = score_report(self.scores.conf, self.ctx.meta.classes)
            if self.object_classes and self.classes is not None:
                metrics["objects"] = score_objects(self.classes.staged, self.ref, self.reference_path,
                                                   self.ctx.meta.classes, self.object_classes)
            if isinstance(self.ref, VectorReference):
                metrics["vector_reference"] = self.ref.summary
            self.report["metrics"] = metrics
        self._release()
        if self.path is None:
            return None
        write_json(stage.path(self.path), self.report)
        return self.path

    def _release(self) -> None:
        if self.ref is not None:
            self.ref.close()
            self.ref = None

    def abort(self) -> None:
        self._release()
