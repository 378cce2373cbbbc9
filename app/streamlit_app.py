"""rsseg map viewer: widgets only; everything that computes lives in :mod:`rsseg.viewer`.

Start it with ``rsseg app`` (binds 127.0.0.1). Server settings come from the environment
(``RSSEG_DATA_DIR``, ``RSSEG_CACHE_DIR``, ``RSSEG_MAX_UPLOAD_MB``); the URL may preselect files
relative to the data directory: ``?raster=a.tif&model=m.ckpt&reference=mask.tif&run=1`` (and
``&swipe=input | classes`` to open with the swipe divider).
Map layers are full-resolution tiles from a tile server on 127.0.0.1 inside this process
(:mod:`rsseg.viewer.tile_server`; ``RSSEG_TILES=0`` or a missing rio-tiler: decimated overlays instead).
"""

from __future__ import annotations

import os

import streamlit as st
from streamlit_folium import st_folium

from rsseg import viewer
from rsseg.checkpoint import read_meta
from rsseg.config import ENGINES, TTA_MODES
from rsseg.errors import RsSegError

NO_REFERENCE = "(none)"
WHOLE, DRAWN = "Whole raster", "Drawn area"
COMPARE = ["off", "input | classes", "reference | prediction"]
#: choices offered by the sliders (the checkpoint's own values are added)
TILES = [256, 512, 1024, 2048]
OVERLAPS = [0, 32, 64, 128, 256]


@st.cache_resource(max_entries=2, show_spinner="Loading model…")
def _model(path: str, mtime_ns: int, size: int):  # noqa: ANN202 - (model, meta)
    return viewer.load_checkpoint(path)


@st.cache_data(ttl=15, show_spinner=False)
def _listing(root: str, suffixes: tuple, exclude: str) -> list[str]:
    return viewer.list_files(root, suffixes, exclude=exclude)


@st.cache_data(ttl=15, show_spinner=False)
def _inputs(root: str, exclude: str) -> list[str]:
    return viewer.list_inputs(root, exclude=exclude)


@st.cache_data(max_entries=16, show_spinner=False)
def _meta(path: str, mtime_ns: int, size: int):  # noqa: ANN202
    return read_meta(path)


@st.cache_resource(show_spinner=False)
def _tile_server():  # noqa: ANN202 - one per server process, shared by every session
    if os.environ.get("RSSEG_TILES", "1") == "0" or not viewer.tiles_available():
        return None
    settings = viewer.AppSettings.from_env()  # tiles come from the data directory and the cache (predictions, uploads)
    return viewer.TileServer(roots=(settings.data_dir, settings.cache_dir)).start()


@st.cache_data(max_entries=32, show_spinner="Preparing the map…")
def _layer(stamp: tuple, name: str, colors: tuple | None, hidden: tuple, side: str | None, opacity: float,
           show: bool = True):  # noqa: ANN202
    return viewer.raster_layer(name, stamp[0], colors=None if colors is None else list(colors), hidden=hidden,
                               server=_tile_server(), side=side, opacity=opacity, show=show)


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
    rasters = _inputs(str(settings.data_dir), str(settings.cache_dir))
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
            st.info("No models (.ckpt checkpoints or .onnx files) in the data directory (train one with `rsseg train` "
                    "or `rsseg demo`, export one with `rsseg export`).")
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
    aoi = st.session_state.get("aoi")
    area = st.radio("Predict", [WHOLE, DRAWN], horizontal=True, key="area", disabled=aoi is None,
                    help="Draw a rectangle or polygon with the tools at the map's top left, then predict inside it only.")
    if aoi is not None and st.button("Clear the drawn area", key="clear_area"):
        # st_folium keeps returning the last drawing: remember it so it is not picked up again
        st.session_state["aoi_cleared"] = st.session_state.pop("aoi")
        st.rerun()
    clicked_run = st.button("Run prediction", type="primary", disabled=raster_path is None or ckpt_path is None, key="run")
    st.divider()
    basemap = st.selectbox("Basemap", list(viewer.BASEMAPS), key="basemap", help="Online basemaps need internet access.")
    opacity = st.slider("Class layer opacity", 0.0, 1.0, 0.6, 0.05, key="opacity")
    show_background = st.checkbox("Show the background class", False, key="show_background",
                                  help="The first class of the checkpoint; transparent by default so the image shows through.")
    swipes = COMPARE if ref_path is not None else COMPARE[:2]
    compare = st.selectbox("Swipe", swipes, index=_preselected(swipes, "swipe"), key="compare",
                           help="A divider to drag across the map: left and right show different layers.")
    error_class = None
    if ref_path is not None and meta is not None:
        error_class = st.selectbox("Error layer for class", meta.classes, index=min(1, meta.num_classes - 1), key="error_class",
                                   help="False positives (orange) and false negatives (blue) of this class against the reference.")

job = None
predict_path, score_ref = raster_path, ref_path
if area == DRAWN and aoi is not None and raster_path is not None:
    try:  # the model sees only the drawn window (rsseg.viewer.aoi); the reference is cut the same way
        predict_path = viewer.crop_to_area(raster_path, aoi, settings.cache_dir / "areas")
        score_ref = viewer.crop_to_area(ref_path, aoi, settings.cache_dir / "areas") if ref_path is not None else None
    except RsSegError as exc:
        st.error(str(exc))
        predict_path = None
if predict_path is not None and ckpt_path is not None:
    job = (viewer.file_stamp(predict_path), viewer.file_stamp(ckpt_path), tile, overlap, tta)
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
            predict_path, ckpt_path, settings.cache_dir, tile=tile, overlap=overlap, tta=tta, engine=engine,
            loader=lambda _path: _model(*ckpt_stamp),
            on_progress=lambda fraction, message: slot.progress(min(max(fraction, 0.0), 1.0), text=message),
        )
        slot.empty()
        if score_ref is not None:
            scores = _scores(viewer.file_stamp(pred.classes_tif), viewer.file_stamp(score_ref), pred)
    except RsSegError as exc:
        st.error(str(exc))

# the map fills the window's height (Streamlit cannot size a component to the viewport itself)
st.markdown('<style>[data-testid="stMainBlockContainer"] {padding-top: 2.5rem; padding-bottom: 1rem} '
            'iframe[title="streamlit_folium.st_folium"] {height: calc(100vh - 4.5rem) !important}</style>',
            unsafe_allow_html=True)
inspected = None
map_col, panel = st.columns([3, 2])
with map_col:
    try:
        swipe = compare != "off" and pred is not None
        hidden = () if show_background else (0,)
        layers = []
        if raster_path is not None:
            layers.append(_layer(viewer.file_stamp(raster_path), "input image", None, (), None, 1.0))
        if pred is not None:
            if swipe and compare == COMPARE[2]:
                layers.append(_layer(viewer.file_stamp(score_ref), "reference", tuple(pred.colors), hidden, "left", opacity))
            layers.append(_layer(viewer.file_stamp(pred.classes_tif), "classes", tuple(pred.colors), hidden, "right", opacity))
            if error_class is not None and score_ref is not None:
                errors = viewer.error_raster(pred.classes_tif, score_ref, meta.classes.index(error_class))
                layers.append(_layer(viewer.file_stamp(errors), f"errors: {error_class}", tuple(viewer.ERROR_COLORS), (0,),
                                     None, 1.0, show=False))
        polygons, n_polygons = _polygons(viewer.file_stamp(pred.polygons), tuple(pred.colors)) if pred else (None, 0)
        legend = None
        if meta is not None:
            names, colors = list(meta.classes), list(meta.colors)
            if hidden:
                names[0] += " (not drawn)"
            if error_class is not None:
                names, colors = [*names, *viewer.ERROR_CLASSES[1:]], [*colors, *viewer.ERROR_COLORS[1:]]
            legend = viewer.legend_html(names, colors)
        fmap = viewer.build_map(layers=layers, polygons=polygons, legend=legend, basemap=basemap, swipe=swipe, draw=True,
                                area=aoi, leaflet=viewer.local_leaflet())
        state = st_folium(fmap, key="map", height=700, use_container_width=True,
                          returned_objects=["last_clicked", "last_active_drawing"]) or {}
        drawn = (state.get("last_active_drawing") or {}).get("geometry")
        if drawn and drawn not in (st.session_state.get("aoi"), st.session_state.get("aoi_cleared")):
            st.session_state["aoi"] = drawn
            st.rerun()  # enables "Drawn area"
        if pred is None:
            st.caption("Pick a raster and a checkpoint, then press **Run prediction** "
                       "(or draw an area on the map and predict inside it).")
        elif predict_path != raster_path:
            st.caption(f"Predicted inside the drawn area only: {pred.report['valid_pixels']:,} px.")
        elif polygons is not None and len(polygons["features"]) < n_polygons:
            st.caption(f"Showing the {len(polygons['features']):,} largest of {n_polygons:,} polygons.")
        point = state.get("last_clicked")
        if pred is not None and point:
            hit = viewer.inspect_point(pred, point["lat"], point["lng"], score_ref)
            if hit is None:
                inspected = f"({point['lat']:.6f}, {point['lng']:.6f}) is outside the prediction."
            else:
                prob = f", probability {hit.probability:.2f}" if hit.probability is not None else ""
                ref = f"; reference: **{hit.reference or 'nodata'}**" if score_ref is not None else ""
                inspected = (f"Class at ({point['lat']:.6f}, {point['lng']:.6f}): **{hit.class_name or 'nodata'}**{prob}{ref} "
                             f"(row {hit.row}, col {hit.col})")
    except RsSegError as exc:
        st.error(str(exc))

with panel:
    if inspected is not None:  # beside the map, where the click happened, not below the page fold
        st.info(inspected)
    if pred is not None:
        st.subheader("Class areas")
        rows = viewer.area_table(pred.report)
        st.dataframe(rows, hide_index=True, key="areas", height=38 + 35 * len(rows))  # every row, no inner scroll
        st.bar_chart({"class": [r["class"] for r in rows], "area (m²)": [r["area_m2"] for r in rows]}, x="class", y="area (m²)")
        st.subheader("Downloads")
        stem = raster_path.stem if raster_path is not None else "prediction"
        st.download_button("Class raster (GeoTIFF)", pred.classes_tif.read_bytes(), f"{stem}_classes.tif", "image/tiff", key="dl_tif")
        st.download_button("Confidence raster (GeoTIFF)", pred.confidence_tif.read_bytes(), f"{stem}_confidence.tif",
                           "image/tiff", key="dl_conf", help="Probability of the predicted class x 255 (0 = nodata).")
        for fmt, (suffix, mime) in viewer.POLYGON_FORMATS.items():
            st.download_button(f"Polygons ({fmt})", viewer.polygons_file(pred, fmt).read_bytes(), f"{stem}_polygons{suffix}",
                               mime, key=f"dl_poly{suffix}")
        st.download_button("Area report (JSON)", pred.report_json.read_bytes(), f"{stem}_areas.json", "application/json", key="dl_json")
        st.download_button("Area report (Markdown)", viewer.area_markdown(pred.report), f"{stem}_areas.md", "text/markdown", key="dl_md")
    if scores is not None:
        st.subheader("Accuracy against the reference")
        st.markdown(scores.markdown)
        st.image(str(scores.confusion_png), caption="confusion matrix (rows: reference)")
