"""rsseg map viewer: widgets only; everything that computes lives in :mod:`rsseg.viewer`.

Start it with ``rsseg app`` (binds 127.0.0.1). Server settings come from the environment
(``RSSEG_DATA_DIR``, ``RSSEG_CACHE_DIR``, ``RSSEG_MAX_UPLOAD_MB``); the URL may preselect files
relative to the data directory: ``?raster=a.tif&model=m.ckpt&reference=mask.tif&run=1``.
"""

from __future__ import annotations

import os

import streamlit as st
from streamlit_folium import st_folium

from rsseg import viewer
from rsseg.checkpoint import read_meta
from rsseg.errors import RsSegError
from rsseg.config import ENGINES, TTA_MODES

NO_REFERENCE = "(none)"
#: choices offered by the sliders (the checkpoint's own values are added)
TILES = [256, 512, 1024, 2048]
OVERLAPS = [0, 32, 64, 128, 256]


@st.cache_resource(max_entries=2, show_spinner="Loading model…")
def _model(path: str, mtime_ns: int, size: int):  # noqa: ANN202 - (model, meta)
    return viewer.load_checkpoint(path)


@st.cache_data(ttl=15, show_spinner=False)
def _listing(root: str, suffixes: tuple, exclude: str) -> list[str]:
    return viewer.list_files(root, suffixes, exclude=exclude)


@st.cache_data(max_entries=16, show_spinner=False)
def _meta(path: str, mtime_ns: int, size: int):  # noqa: ANN202
    return read_meta(path)


@st.cache_data(max_entries=16, show_spinner="Rendering image…")
def _image_overlay(stamp: tuple):  # noqa: ANN202
    return viewer.render_image(stamp[0])


@st.cache_data(max_entries=16, show_spinner=False)
def _classes_overlay(stamp: tuple, colors: tuple):  # noqa: ANN202
    return viewer.render_classes(stamp[0], list(colors))


@st.cache_data(max_entries=16, show_spinner=False)
def _polygons(stamp: tuple, colors: tuple):  # noqa: ANN202
    return viewer.polygons_geojson(stamp[0], list(colors))


@st.cache_data(max_entries=16, show_spinner="Scoring against the reference…")
def _scores(pred_stamp: tuple, ref_stamp: tuple, _pred):  # noqa: ANN001, ANN202
    return viewer.score_reference(_pred, ref_stamp[0])


def _preselected(options: list[str], param: str) -> int:
    value = st.query_params.get(param)
    return options.index(value) if value in options else 0


st.set_page_config(page_title="rsseg map viewer", layout="wide")
try:
    settings = viewer.AppSettings.from_env()
    rasters = _listing(str(settings.data_dir), viewer.RASTER_SUFFIXES, str(settings.cache_dir))
    checkpoints = _listing(str(settings.data_dir), viewer.CHECKPOINT_SUFFIXES, str(settings.cache_dir))
except RsSegError as exc:
    st.error(str(exc))
    st.stop()

raster_path = ckpt_path = ref_path = meta = None
with st.sidebar:
    st.header("rsseg map viewer")
    st.caption(f"Data directory: `{settings.data_dir}`")
    try:
        source = st.radio("Raster", ["Data directory", "Upload"], horizontal=True, key="source")
        if source == "Upload":
            upload = st.file_uploader(f"GeoTIFF (up to {settings.max_upload_mb:g} MB)", type=["tif", "tiff"], key="upload")
            if upload is not None:
                raster_path = viewer.save_upload(upload.getvalue(), upload.name, settings.cache_dir / "uploads", settings.max_upload_mb)
        elif rasters:
            rel = st.selectbox("Raster file", rasters, index=_preselected(rasters, "raster"), key="raster")
            raster_path = viewer.check_raster(viewer.resolve_under(settings.data_dir, rel), settings.max_pixels)
        else:
            st.info("No .tif files in the data directory; upload one instead.")
        if checkpoints:
            rel = st.selectbox("Model checkpoint", checkpoints, index=_preselected(checkpoints, "model"), key="model")
            ckpt_path = viewer.resolve_under(settings.data_dir, rel)
            meta = _meta(*viewer.file_stamp(ckpt_path))
            st.caption("Classes: " + ", ".join(meta.classes))
        else:
            st.info("No .ckpt checkpoints in the data directory (train one with `rsseg train` or `rsseg demo`).")
        refs = [NO_REFERENCE, *rasters]
        rel = st.selectbox("Reference mask (optional)", refs, index=_preselected(refs, "reference"), key="reference")
        ref_path = None if rel == NO_REFERENCE else viewer.resolve_under(settings.data_dir, rel)
    except RsSegError as exc:
        st.error(str(exc))
    with st.expander("Prediction settings"):
        # the checkpoint's settings (rsseg.inference.settings) are the widgets' starting values
        start = viewer.prediction_settings(meta) if meta is not None else None
        tiles = sorted({*TILES, start.tile}) if start else TILES
        tile = st.select_slider("Tile (px)", tiles, value=start.tile if start else tiles[0], key="tile")
        fit = viewer.prediction_settings(meta, tile=tile).overlap if meta is not None else tile // 4
        overlap = st.select_slider("Overlap (px)", sorted({*OVERLAPS, fit} - {o for o in OVERLAPS if o >= tile}),
                                   value=fit, key="overlap")
        tta = st.selectbox("Test-time augmentation", list(TTA_MODES), index=TTA_MODES.index(start.tta) if start else 0,
                           key="tta")
        # RSSEG_ENGINE sets the default, as for `rsseg predict --engine`
        default_engine = os.environ.get("RSSEG_ENGINE", "auto")
        engine = st.selectbox("Engine", list(ENGINES), index=ENGINES.index(default_engine) if default_engine in ENGINES else 0,
                              key="engine", help="auto: ONNX Runtime on the CPU when installed (the model is exported "
                                                 "once and cached), else PyTorch.")
    clicked_run = st.button("Run prediction", type="primary", disabled=raster_path is None or ckpt_path is None, key="run")
    st.divider()
    basemap = st.selectbox("Basemap", list(viewer.BASEMAPS), key="basemap", help="Online basemaps need internet access.")
    opacity = st.slider("Class layer opacity", 0.0, 1.0, 0.6, 0.05, key="opacity")

job = None
if raster_path is not None and ckpt_path is not None:
    job = (viewer.file_stamp(raster_path), viewer.file_stamp(ckpt_path), tile, overlap, tta)
    autorun = st.query_params.get("run") == "1" and not st.session_state.get("autorun_done")
    if clicked_run or autorun:
        st.session_state["job"], st.session_state["autorun_done"] = job, True

pred = scores = None
if job is not None and st.session_state.get("job") == job:
    raster_stamp, ckpt_stamp, tile, overlap, tta = job
    slot = st.empty()
    try:
        # disk-cached in rsseg.viewer: a rerun finds the result without loading the model
        pred = viewer.run_prediction(
            raster_path, ckpt_path, settings.cache_dir, tile=tile, overlap=overlap, tta=tta, engine=engine,
            loader=lambda _path: _model(*ckpt_stamp),
            on_progress=lambda fraction, message: slot.progress(min(max(fraction, 0.0), 1.0), text=message),
        )
        slot.empty()
        if ref_path is not None:
            scores = _scores(viewer.file_stamp(pred.classes_tif), viewer.file_stamp(ref_path), pred)
    except RsSegError as exc:
        st.error(str(exc))

map_col, panel = st.columns([3, 2])
with map_col:
    try:
        image = _image_overlay(viewer.file_stamp(raster_path)) if raster_path is not None else None
        classes = _classes_overlay(viewer.file_stamp(pred.classes_tif), tuple(pred.colors)) if pred else None
        polygons, n_polygons = _polygons(viewer.file_stamp(pred.polygons), tuple(pred.colors)) if pred else (None, 0)
        legend = viewer.legend_html(meta.classes, meta.colors) if meta is not None else None
        fmap = viewer.build_map(image=image, classes=classes, polygons=polygons, legend=legend, basemap=basemap,
                                opacity=opacity, leaflet=viewer.local_leaflet())
        clicked = st_folium(fmap, key="map", height=620, use_container_width=True, returned_objects=["last_clicked"])
        if pred is None:
            st.caption("Pick a raster and a checkpoint, then press **Run prediction**.")
        elif polygons is not None and len(polygons["features"]) < n_polygons:
            st.caption(f"Showing the {len(polygons['features']):,} largest of {n_polygons:,} polygons.")
        point = (clicked or {}).get("last_clicked")
        if pred is not None and point:
            hit = viewer.query_point(pred.classes_tif, point["lat"], point["lng"])
            if hit is None:
                st.info(f"({point['lat']:.6f}, {point['lng']:.6f}) is outside the raster.")
            else:
                name = pred.classes[hit.value] if hit.value is not None and hit.value < len(pred.classes) else "nodata"
                st.info(f"Class at ({point['lat']:.6f}, {point['lng']:.6f}): **{name}** (row {hit.row}, col {hit.col})")
    except RsSegError as exc:
        st.error(str(exc))

with panel:
    if pred is not None:
        st.subheader("Class areas")
        rows = viewer.area_table(pred.report)
        st.dataframe(rows, hide_index=True, key="areas")
        st.bar_chart({"class": [r["class"] for r in rows], "area (m²)": [r["area_m2"] for r in rows]}, x="class", y="area (m²)")
        st.subheader("Downloads")
        stem = raster_path.stem if raster_path is not None else "prediction"
        st.download_button("Class raster (GeoTIFF)", pred.classes_tif.read_bytes(), f"{stem}_classes.tif", "image/tiff", key="dl_tif")
        st.download_button("Polygons (GeoPackage)", pred.polygons.read_bytes(), f"{stem}_polygons.gpkg", "application/geopackage+sqlite3", key="dl_gpkg")
        st.download_button("Area report (JSON)", pred.report_json.read_bytes(), f"{stem}_areas.json", "application/json", key="dl_json")
        st.download_button("Area report (Markdown)", viewer.area_markdown(pred.report), f"{stem}_areas.md", "text/markdown", key="dl_md")
    if scores is not None:
        st.subheader("Accuracy against the reference")
        st.markdown(scores.markdown)
        st.image(str(scores.confusion_png), caption="confusion matrix (rows: reference)")
