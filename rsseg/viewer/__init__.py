"""rsseg.viewer: everything the Streamlit map viewer (``app/streamlit_app.py``) computes.

- :mod:`~rsseg.viewer.files`: paths confined to the data directory, listings (inputs only), uploads
- :mod:`~rsseg.viewer.session`: settings, cached predictions, area tables, reference scores, point
  inspection, downloads (class raster and polygons with their styles)
- :mod:`~rsseg.viewer.render`: PNG overlays from overviews, legend, polygons, point queries
- :mod:`~rsseg.viewer.tile_server`: full-resolution XYZ tiles from the rasters on a 127.0.0.1 server
- :mod:`~rsseg.viewer.compare`: the error layer (false positives / negatives against a reference)
- :mod:`~rsseg.viewer.aoi`: the input cut to a drawn area of interest
- :mod:`~rsseg.viewer.mapview`: the folium map (tiles, swipe, draw), with Leaflet inlined when offline
"""

from rsseg.viewer.aoi import area_window, crop_to_area
from rsseg.viewer.compare import ERROR_CANDIDATES, ERROR_CLASSES, error_colors, error_raster, error_values
from rsseg.viewer.files import (
                                CHECKPOINT_SUFFIXES,
                                RASTER_SUFFIXES,
                                check_raster,
                                file_stamp,
                                is_rsseg_output,
                                links_outside,
                                list_files,
                                list_inputs,
                                open_geotiff,
                                resolve_under,
                                save_upload,
)
from rsseg.viewer.mapview import BASEMAPS, LeafletAssets, MapLayer, build_map, leaflet_draw, local_leaflet, raster_layer
from rsseg.viewer.render import (
                                LEGEND_CLASS,
                                MAX_DISPLAY_PX,
                                LegendGroup,
                                Overlay,
                                PointValue,
                                legend_html,
                                polygons_geojson,
                                query_point,
                                render_classes,
                                render_image,
)
from rsseg.viewer.session import (
                                POLYGON_FORMATS,
                                AppSettings,
                                Inspection,
                                Prediction,
                                ReferenceScores,
                                accuracy_summary,
                                accuracy_table,
                                app_script,
                                area_chart,
                                area_markdown,
                                area_table,
                                class_raster_file,
                                find_prediction,
                                inspect_point,
                                load_checkpoint,
                                polygons_file,
                                prediction_key,
                                prediction_settings,
                                run_prediction,
                                score_reference,
)
from rsseg.viewer.tile_server import (
                                TileInfo,
                                TileLayer,
                                TileServer,
                                class_layer,
                                image_layer,
                                render_tile,
                                tile_info,
                                tiles_available,
                                tiles_off_reason,
)

__all__ = [
    "BASEMAPS", "CHECKPOINT_SUFFIXES", "ERROR_CANDIDATES", "ERROR_CLASSES", "LEGEND_CLASS", "MAX_DISPLAY_PX", "POLYGON_FORMATS",
    "RASTER_SUFFIXES", "AppSettings", "Inspection", "LeafletAssets", "LegendGroup", "MapLayer", "Overlay", "PointValue", "Prediction",
    "ReferenceScores", "TileInfo", "TileLayer", "TileServer", "accuracy_summary", "accuracy_table", "app_script", "area_chart",
    "area_markdown", "area_table", "area_window", "build_map", "check_raster", "class_layer", "class_raster_file", "crop_to_area", "error_colors",
    "error_raster", "error_values", "file_stamp", "find_prediction", "image_layer", "inspect_point", "is_rsseg_output",
    "leaflet_draw", "legend_html", "links_outside", "list_files", "list_inputs", "load_checkpoint", "local_leaflet",
    "open_geotiff", "polygons_file", "polygons_geojson", "prediction_key", "prediction_settings", "query_point", "raster_layer",
    "render_classes", "render_image", "render_tile", "resolve_under", "run_prediction", "save_upload", "score_reference",
    "tile_info", "tiles_available", "tiles_off_reason",
]
