"""rsseg.viewer: everything the Streamlit map viewer (``app/streamlit_app.py``) computes.

- :mod:`~rsseg.viewer.files`: paths confined to the data directory, listings, uploads
- :mod:`~rsseg.viewer.session`: settings, cached predictions, area tables, reference scores
- :mod:`~rsseg.viewer.render`: PNG overlays from overviews, legend, polygons, point queries
- :mod:`~rsseg.viewer.mapview`: the folium map, with Leaflet inlined when offline
"""

from rsseg.viewer.files import (CHECKPOINT_SUFFIXES, RASTER_SUFFIXES, check_raster, file_stamp, list_files,
                                open_geotiff, resolve_under, save_upload)
from rsseg.viewer.mapview import BASEMAPS, LeafletAssets, build_map, local_leaflet
from rsseg.viewer.render import (LEGEND_CLASS, MAX_DISPLAY_PX, Overlay, PointValue, legend_html, polygons_geojson,
                                 query_point, render_classes, render_image)
from rsseg.viewer.session import (AppSettings, Prediction, ReferenceScores, app_script, area_markdown, area_table,
                                  find_prediction, load_checkpoint, prediction_key, prediction_settings, run_prediction,
                                  score_reference)

__all__ = [
    "BASEMAPS", "CHECKPOINT_SUFFIXES", "LEGEND_CLASS", "MAX_DISPLAY_PX", "RASTER_SUFFIXES", "AppSettings",
    "LeafletAssets", "Overlay", "PointValue", "Prediction", "ReferenceScores", "app_script", "area_markdown",
    "area_table", "build_map", "find_prediction", "check_raster", "file_stamp", "legend_html", "list_files", "load_checkpoint",
    "local_leaflet", "open_geotiff", "polygons_geojson", "prediction_key", "prediction_settings", "query_point", "render_classes", "render_image",
    "resolve_under", "run_prediction", "save_upload", "score_reference",
]
