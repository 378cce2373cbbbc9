"""What the viewer computes: settings, cached predictions, area tables and reference scores.

Predictions are cached on disk under ``<cache_dir>/predictions/<key>/``, keyed on the raster's
and checkpoint's resolved path, modification time and size plus the prediction settings, so
re-rendering the page (a click on the map, a slider) never re-runs the model, an edited file never
serves a stale result, and a restarted server keeps its results. (Not ``st.cache_data``: the
progress bar of a running prediction cannot live inside a replayed cached function.) Models are
held by ``st.cache_resource`` in the app.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rsseg.checkpoint import ModelMeta, is_onnx_model, load_model, read_meta
from rsseg.config import is_hex_color
from rsseg.errors import BackendUnavailableError, ConfigError, InputNotFoundError
from rsseg.inference import Predictor, PredictSettings, predict_file, resolve_device, resolve_settings, vectorize
from rsseg.inference.contract import require_contract
from rsseg.inference.engines import FILE_ENGINES
from rsseg.inference.settings import onnx_model_settings, resolve_engine
from rsseg.io import atomic_path
from rsseg.viewer.files import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV, check_raster, file_stamp, max_pixels

if TYPE_CHECKING:  # the base install has no torch: the viewer runs .onnx models and cached exports without it
    from torch import nn

#: the viewer's progress: (fraction in [0, 1], message), rendered by the app as a Streamlit bar
StageProgressFn = Callable[[float, str], None]
Loader = Callable[[str], "tuple[nn.Module, ModelMeta]"]

DEFAULT_MAX_UPLOAD_MB = 200.0
RESULT_FILE = "result.json"


@dataclass(frozen=True)
class AppSettings:
    """Server-side settings, fixed when the app starts (``rsseg app`` passes them as env vars)."""

    data_dir: Path
    cache_dir: Path
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    max_pixels: int = DEFAULT_MAX_PIXELS

    ENV = {"data_dir": "RSSEG_DATA_DIR", "cache_dir": "RSSEG_CACHE_DIR", "max_upload_mb": "RSSEG_MAX_UPLOAD_MB",
           "max_pixels": MAX_PIXELS_ENV}

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> AppSettings:
        env = os.environ if environ is None else environ
        data_dir = Path(env.get(cls.ENV["data_dir"]) or ".").resolve()
        if not data_dir.is_dir():
            raise InputNotFoundError(f"data directory {data_dir} does not exist; start the app with --data-dir <folder>")
        cache = env.get(cls.ENV["cache_dir"])
        cache_dir = Path(cache) if cache else Path(tempfile.gettempdir()) / f"rsseg-app-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
        try:
            max_mb = float(env.get(cls.ENV["max_upload_mb"]) or DEFAULT_MAX_UPLOAD_MB)
        except ValueError:
            raise ConfigError(f"{cls.ENV['max_upload_mb']} must be a number of megabytes") from None
        return cls(data_dir, cache_dir.resolve(), max_mb, max_pixels(env))

    def to_env(self) -> dict[str, str]:
        return {self.ENV["data_dir"]: str(self.data_dir), self.ENV["cache_dir"]: str(self.cache_dir),
                self.ENV["max_upload_mb"]: f"{self.max_upload_mb:g}", self.ENV["max_pixels"]: str(self.max_pixels)}


@dataclass(frozen=True)
class Prediction:
    """Files of one cached prediction and its area report (``rsseg.inference`` report dict)."""

    classes_tif: Path
    polygons: Path
    report_json: Path
    report: dict[str, Any]
    classes: list[str]
    colors: list[str]
    confidence_tif: Path | None = None


def load_checkpoint(path: str, device: str = "auto") -> tuple[nn.Module, ModelMeta]:
    """Load a checkpoint for the viewer (weights-only unpickling, see :mod:`rsseg.checkpoint`)."""
    return load_model(path, resolve_device(device))


def prediction_settings(checkpoint: str | Path | ModelMeta, *, tile: int | None = None, overlap: int | None = None,
                        tta: str | None = None, device: str = "auto") -> PredictSettings:
    """The settings a viewer prediction runs with: the checkpoint's, then the widgets' overrides."""
    meta = checkpoint if isinstance(checkpoint, ModelMeta) else read_meta(checkpoint)
    return resolve_settings(meta, device=device, tile=tile, overlap=overlap, tta=tta)


def prediction_key(raster: str | Path, checkpoint: str | Path, tile: int, overlap: int, tta: str) -> str:
    """Hex digest of (raster stamp, checkpoint stamp, settings): names the cache entry."""
    payload = json.dumps([file_stamp(raster), file_stamp(checkpoint), tile, overlap, tta])
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _entry(cache_dir: str | Path, raster: Path, checkpoint: Path, s: PredictSettings) -> Path:
    return Path(cache_dir) / "predictions" / prediction_key(raster, checkpoint, s.tile, s.overlap, s.tta)


_NAMES = {"classes_tif": "classes.tif", "polygons": "polygons.gpkg", "report_json": "report.json",
          "confidence_tif": "confidence.tif"}


def find_prediction(raster: str | Path, checkpoint: str | Path, cache_dir: str | Path, *, tile: int | None = None,
                    overlap: int | None = None, tta: str | None = None) -> Prediction | None:
    """The cached prediction for these files (as they are now) and settings, or None."""
    out = _entry(cache_dir, Path(raster), Path(checkpoint),
                 prediction_settings(checkpoint, tile=tile, overlap=overlap, tta=tta))
    done = out / RESULT_FILE
    if not done.is_file():
        return None
    cached = json.loads(done.read_text())
    if "provenance" not in cached["report"]:  # written by an older rsseg, whose report had other keys
        return None
    paths = [out / _NAMES[k] for k in ("classes_tif", "polygons", "report_json", "confidence_tif")]
    if not all(p.is_file() for p in paths):
        return None
    return Prediction(*paths[:3], report=cached["report"], classes=cached["classes"], colors=cached["colors"],
                      confidence_tif=paths[3])


def run_prediction(
    raster: str | Path,
    checkpoint: str | Path,
    cache_dir: str | Path,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    tta: str | None = None,
    batch: int | None = None,
    engine: str = "torch",
    loader: Loader = load_checkpoint,
    on_progress: StageProgressFn | None = None,
) -> Prediction:
    """Predict ``raster`` with ``checkpoint`` into the cache, or return the cached result.

    Unset settings come from the checkpoint (:func:`prediction_settings`). ``engine`` (torch,
    onnx, auto: :func:`rsseg.inference.settings.resolve_engine`): the torch engine runs the model
    from ``loader``; the ONNX engine runs the checkpoint's cached export. An exported ``.onnx``
    model always runs in ONNX Runtime (the torch engine refused). Writes the class COG,
    the confidence raster, a GeoPackage of polygons and the JSON area report; ``on_progress`` gets (fraction in [0, 1],
    message) for the model part (90 %) and the polygons (last 10 %), from the calling thread.
    """
    report_progress = on_progress or (lambda f, msg: None)
    raster, checkpoint = Path(raster), Path(checkpoint)
    if is_onnx_model(checkpoint):  # a CPU file engine runs it: the torch engine is refused
        onnx_model_settings(checkpoint, PredictSettings(engine=engine))
    require_contract(read_meta(checkpoint), checkpoint)  # before a cached map too: it would be as wrong
    if (hit := find_prediction(raster, checkpoint, cache_dir, tile=tile, overlap=overlap, tta=tta)) is not None:
        return hit
    check_raster(raster)
    report_progress(0.0, "loading model")
    if is_onnx_model(checkpoint) or resolve_engine(engine, resolve_device("auto")) in FILE_ENGINES:
        predictor = Predictor.from_checkpoint(checkpoint, engine=engine, tile=tile, overlap=overlap, batch=batch, tta=tta)
        meta = predictor.meta
    else:
        model, meta = loader(str(checkpoint))
        predictor = Predictor.from_model(model, meta, device=next(model.parameters()).device, tile=tile,
                                         overlap=overlap, batch=batch, tta=tta)
    out = _entry(cache_dir, raster, checkpoint, predictor.settings)
    out.mkdir(parents=True, exist_ok=True)

    def windows_done(done: int, total: int) -> None:
        report_progress(0.9 * done / total, f"predicted {done}/{total} windows")

    result = predict_file(predictor, raster, out / _NAMES["classes_tif"], report_path=out / _NAMES["report_json"],
                          confidence_path=out / _NAMES["confidence_tif"], overwrite=True, model_path=checkpoint,
                          on_progress=windows_done)
    report_progress(0.9, "polygonising")
    vectorize(result.output_path, out / _NAMES["polygons"], meta.classes)
    colors = meta.colors[: meta.num_classes]
    with atomic_path(out / RESULT_FILE) as tmp:
        tmp.write_text(json.dumps({"report": result.report, "classes": meta.classes, "colors": colors}))
    report_progress(1.0, "done")
    return Prediction(*(out / _NAMES[k] for k in ("classes_tif", "polygons", "report_json")), report=result.report,
                      classes=meta.classes, colors=colors, confidence_tif=out / _NAMES["confidence_tif"])


def area_table(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows (class, pixels, area_m2, area_ha, percent) of an ``rsseg.inference`` area report."""
    return [
        {"class": c["class_name"], "pixels": c["pixels"], "area_m2": round(c["area_m2"], 2),
         "area_ha": round(c["area_m2"] / 1e4, 4), "percent": round(100 * c["area_fraction"], 2)}
        for c in report["classes"]
    ]


def area_chart(report: dict[str, Any], colors: list[str]) -> dict[str, Any]:
    """A Vega-Lite bar chart of the class areas, each bar in its class's map colour (``colors`` in
    class order; anything but ``#rrggbb`` is drawn grey, as in the legend)."""
    rows = area_table(report)
    names = [r["class"] for r in rows]
    ids = [c["class_id"] for c in report["classes"]]
    palette = [colors[i] if i < len(colors) and is_hex_color(colors[i]) else "#808080" for i in ids]
    return {
        "data": {"values": [{"class": r["class"], "area (m²)": r["area_m2"], "%": r["percent"]} for r in rows]},
        "mark": {"type": "bar", "stroke": "#555555", "strokeWidth": 0.5},
        "encoding": {
            "x": {"field": "class", "type": "nominal", "sort": names, "title": None, "axis": {"labelAngle": -30}},
            "y": {"field": "area (m²)", "type": "quantitative"},
            "color": {"field": "class", "type": "nominal", "legend": None,
                      "scale": {"domain": names, "range": palette}},
            "tooltip": [{"field": "class"}, {"field": "area (m²)", "format": ",.1f"}, {"field": "%", "format": ".2f"}],
        },
    }


def area_markdown(report: dict[str, Any]) -> str:
    """The area report as a Markdown table (for the download button)."""
    lines = [f"# Class areas: {Path(report.get('input', '')).name}", "",
             "| class | pixels | area (m²) | area (ha) | % |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['class']} | {r['pixels']:,} | {r['area_m2']:,.1f} | {r['area_ha']:,.3f} | {r['percent']:.2f} |"
              for r in area_table(report)]
    lines += ["", f"Total valid area: {report['total_area_m2']:,.1f} m² ({report['valid_pixels']:,} px, "
              f"{report['nodata_pixels']:,} nodata px)"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ReferenceScores:
    report: dict[str, Any]
    markdown: str
    confusion_png: Path


def score_reference(pred: Prediction, reference: str | Path) -> ReferenceScores:
    """Per-class IoU/F1 and confusion matrix of a cached prediction against a reference mask.

    The evaluate sequence of :func:`rsseg.evaluation.evaluate_prediction`; the files go beside
    the prediction, keyed on the reference's stamp so a changed mask is scored again.
    """
    from rsseg.evaluation import evaluate_prediction

    reference = check_raster(Path(reference))
    key = hashlib.sha256(json.dumps(file_stamp(reference)).encode()).hexdigest()[:16]
    result = evaluate_prediction(pred.classes_tif, reference, pred.classes_tif.parent / f"evaluation-{key}",
                                 class_names=pred.classes)
    return ReferenceScores(result.report, result.markdown, result.paths["confusion.png"])


def _percent(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(100 * value, 2)


def accuracy_table(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows (class, IoU, F1, precision, recall in %, None where undefined; reference pixels) of an
    evaluation report (:func:`rsseg.inference.scoring.score_report`)."""
    return [{"class": r["class"], "IoU": _percent(r["iou"]), "F1": _percent(r["f1"]), "precision": _percent(r["precision"]),
             "recall": _percent(r["recall"]), "pixels": int(r["support"])} for r in report["per_class"]]


def accuracy_summary(report: dict[str, Any]) -> str:
    """One line: overall accuracy, mIoU and mF1 in %, and the classes the means leave out."""
    values = {key: _percent(report[key]) for key in ("OA", "mIoU", "mF1")}
    parts = [f"{key} {'n/a' if v is None else f'{v:.2f} %'}" for key, v in values.items()]
    excluded = report.get("excluded_from_means") or []
    return " · ".join(parts) + (f" (means exclude {', '.join(excluded)})" if excluded else "")


def app_script() -> Path:
    """The Streamlit script of the viewer (``app/streamlit_app.py``), installed or in a checkout."""
    import importlib.util

    spec = importlib.util.find_spec("rsseg.app")
    candidates = [Path(p) / "streamlit_app.py" for p in (spec.submodule_search_locations or [])] if spec else []
    candidates.append(Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py")
    for c in candidates:
        if c.is_file():
            return c
    raise BackendUnavailableError("the viewer's Streamlit script (app/streamlit_app.py) is not installed; reinstall rsseg")


@dataclass(frozen=True)
class Inspection:
    """What is under a clicked point: class (None on nodata), its probability, the reference class."""

    row: int
    col: int
    class_name: str | None
    probability: float | None
    reference: str | None = None


def inspect_point(pred: Prediction, lat: float, lon: float, reference: str | Path | None = None) -> Inspection | None:
    """Class, probability (the confidence raster: max probability x 255) and reference class at a
    WGS84 point; None outside the raster."""
    from rsseg.viewer.render import query_point

    hit = query_point(pred.classes_tif, lat, lon)
    if hit is None:
        return None

    def name(v: int | None) -> str | None:
        return pred.classes[v] if v is not None and 0 <= v < len(pred.classes) else None

    prob = None
    if pred.confidence_tif is not None and hit.value is not None:
        conf = query_point(pred.confidence_tif, lat, lon)
        prob = conf.value / 255 if conf is not None and conf.value else None
    ref = query_point(reference, lat, lon) if reference is not None else None
    return Inspection(hit.row, hit.col, name(hit.value), prob, name(ref.value) if ref is not None else None)


#: polygon download formats: label -> (file suffix, MIME type); the shapefile comes zipped
POLYGON_FORMATS = {"GeoPackage": (".gpkg", "application/geopackage+sqlite3"),
                   "GeoJSON": (".geojson", "application/geo+json"),
                   "Shapefile (zip)": (".zip", "application/zip")}


def _downloads(pred: Prediction) -> Path:
    """Where a prediction's downloads are made once, beside its cached files."""
    folder = pred.classes_tif.parent / "downloads"
    folder.mkdir(exist_ok=True)
    return folder


def class_raster_file(pred: Prediction, scene: str) -> Path:
    """The class raster as ``<scene>_classes.zip``: the GeoTIFF with its category names and
    attribute table (``.aux.xml``, which a GeoTIFF cannot hold inside) and QGIS style (``.qml``),
    named ``<scene>_classes.*`` so QGIS and GDAL find them beside the unzipped raster."""
    import zipfile

    from rsseg.inference.styles import class_raster_sidecars

    target = _downloads(pred) / f"{scene}_classes.zip"
    if target.is_file():
        return target
    tif = Path(f"{scene}_classes.tif")
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(pred.classes_tif, tif.name)
        for path, text in class_raster_sidecars(tif, pred.classes, pred.colors).items():
            zf.writestr(path.name, text)
    return target


def polygons_file(pred: Prediction, fmt: str, scene: str) -> Path:
    """The prediction's polygons as ``fmt`` (a :data:`POLYGON_FORMATS` key), named
    ``<scene>_polygons`` (file and layer), converted once and kept beside the cached prediction;
    written by :func:`rsseg.inference.vectorize.write_vector` with the QGIS style in the class
    colours (the GeoPackage's ``layer_styles`` table, the ``.qml`` in the shapefile's zip; GeoJSON
    stays a single RFC 7946 file for web maps)."""
    import zipfile

    import geopandas as gpd

    from rsseg.inference.styles import vector_qml
    from rsseg.inference.vectorize import write_vector

    suffix = POLYGON_FORMATS[fmt][0]
    name = f"{scene}_polygons"
    target = _downloads(pred) / f"{name}{suffix}"
    if target.is_file():
        return target
    gdf = gpd.read_file(pred.polygons)
    style = vector_qml(pred.classes, pred.colors)
    if suffix == ".gpkg":
        return write_vector(gdf, target, style=style)
    if suffix == ".geojson":  # RFC 7946: longitude/latitude on WGS84
        return write_vector(gdf, target)
    shp_dir = _downloads(pred) / "shapefile"
    shp_dir.mkdir(exist_ok=True)
    shp = write_vector(gdf, shp_dir / f"{name}.shp", style=style)
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for part in sorted(shp_dir.iterdir()):
            if part.stem == shp.stem:
                zf.write(part, part.name)
    return target
