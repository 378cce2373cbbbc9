"""rsseg.inference: sliding-window prediction over rasters of any size, COG/vector/report output.

Public API:
- :class:`Predictor`, built by ``Predictor.from_checkpoint(path, **overrides)`` (or
  ``from_model``), settings resolved once in :mod:`rsseg.inference.settings`
- :func:`predict_file` -> :class:`PredictResult` (one call per input raster); output products are
  writers (:mod:`rsseg.inference.products`)
- scoring: :class:`ConfusionAccumulator`, :func:`score_rasters`, :func:`score_report`
- :func:`plan_windows`, :func:`blend_weight`, :class:`RowBlender`
- :func:`vectorize`, :func:`polygonize`, :func:`area_report`, :class:`AreaAccumulator`, :class:`AreaModel`
"""

from rsseg.inference.areas import AreaModel
from rsseg.inference.blend import RowBlender, argmax_confidence
from rsseg.inference.pipeline import PredictResult, predict_file
from rsseg.inference.predictor import Predictor
from rsseg.inference.products import (
                                      AreaReportWriter,
                                      ClassRasterWriter,
                                      ConfidenceWriter,
                                      ProductContext,
                                      ProductWriter,
                                      RasterWriter,
                                      Rows,
                                      VectorWriter,
)
from rsseg.inference.report import AreaAccumulator, area_report
from rsseg.inference.scoring import ConfusionAccumulator, check_same_grid, score_rasters, score_report
from rsseg.inference.settings import TTA_MODES, PredictSettings, resolve_device, resolve_settings
from rsseg.inference.vectorize import polygonize, vectorize, write_vector
from rsseg.inference.windows import blend_weight, plan_windows
from rsseg.io import open_raster
from rsseg.progress import ProgressFn

__all__ = [
    "AreaAccumulator", "AreaModel", "AreaReportWriter", "ClassRasterWriter", "ConfidenceWriter",
    "ConfusionAccumulator", "PredictResult", "PredictSettings", "Predictor", "ProductContext", "ProductWriter",
    "ProgressFn", "RasterWriter", "RowBlender", "Rows", "TTA_MODES", "VectorWriter", "area_report",
    "argmax_confidence", "blend_weight", "check_same_grid", "open_raster", "plan_windows", "polygonize",
    "predict_file", "resolve_device", "resolve_settings", "score_rasters", "score_report", "vectorize",
    "write_vector",
]
