"""rsseg.inference: sliding-window prediction over rasters of any size, COG/vector/report output.

Public API:
- :class:`Predictor` (``predict_probs``, ``predict_array``, ``run``)
- :func:`predict_file` -> :class:`PredictResult` (one call per input raster)
- :func:`plan_windows`, :func:`blend_weight`, :class:`RowBlender`
- :func:`vectorize`, :func:`polygonize`, :func:`area_report`, :class:`AreaAccumulator`, :class:`AreaModel`
"""

from rsseg.inference.areas import AreaModel
from rsseg.inference.blend import RowBlender, argmax_confidence
from rsseg.inference.pipeline import PredictResult, predict_file
from rsseg.inference.predictor import TTA_MODES, Predictor, resolve_device
from rsseg.inference.report import AreaAccumulator, area_report
from rsseg.inference.vectorize import polygonize, vectorize, write_vector
from rsseg.inference.windows import blend_weight, plan_windows

__all__ = [
    "AreaAccumulator", "AreaModel", "PredictResult", "Predictor", "RowBlender", "TTA_MODES", "area_report",
    "argmax_confidence", "blend_weight", "plan_windows", "polygonize", "predict_file", "resolve_device",
    "vectorize", "write_vector",
]
