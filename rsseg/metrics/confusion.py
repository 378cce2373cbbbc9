"""The one confusion matrix: rows are the reference class, columns the prediction.

Definition, shared by both entry points:
- reference pixels equal to the ignore value (or to the reference's nodata) are not scored;
  any other reference value outside ``0..K-1`` (or a non-whole float) is an error naming it;
- prediction pixels equal to the prediction's nodata are not scored; any other prediction id
  outside ``0..K-1`` is an error naming it, never counted as some class.

:class:`ConfusionAccumulator` (numpy, band by band, nodata-aware) serves every raster scoring path
(``predict --reference``, ``evaluate``, the viewer). :func:`confusion_matrix` is the same definition
on torch tensors, so validation in training counts on the GPU without copying masks to the host;
numpy input goes through the accumulator. torch is imported only by that function, so scoring a
raster with the ONNX engine never loads it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from rsseg.constants import IGNORE_INDEX
from rsseg.errors import LabelError

if TYPE_CHECKING:
    from torch import Tensor

#: values listed in an error message
_SHOWN = 10


def _reference_error(values: list[Any], k: int, ignore_index: int, name: str) -> LabelError:
    return LabelError(f"{name} holds values {values} outside the {k} classes "
                      f"(0..{k - 1}, {ignore_index} = ignore); recode it or give the right class names")


def _prediction_error(values: list[Any], k: int, name: str) -> LabelError:
    return LabelError(f"{name} holds class ids {values} but only {k} classes are named "
                      f"(0..{k - 1}); pass the full class list (--classes) or check the raster")


class ConfusionAccumulator:
    """Confusion matrix ``conf`` [K, K] int64 (rows reference, columns prediction), fed band by band."""

    def __init__(self, num_classes: int, *, ignore_index: int = IGNORE_INDEX, reference_nodata: float | None = None,
                 prediction_nodata: float | None = IGNORE_INDEX, reference_name: str = "reference",
                 prediction_name: str = "prediction") -> None:
        if not 1 <= num_classes <= IGNORE_INDEX:
            raise LabelError(f"{num_classes} classes cannot be scored (1..{IGNORE_INDEX} class ids)")
        self.k = num_classes
        self.ignore_index = ignore_index
        self.reference_nodata, self.prediction_nodata = reference_nodata, prediction_nodata
        self.reference_name, self.prediction_name = reference_name, prediction_name
        self.conf = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, prediction: np.ndarray, reference: np.ndarray) -> None:
        """Add co-registered class ids ``prediction`` and ``reference`` (same shape)."""
        p, r = np.asarray(prediction), np.asarray(reference)
        if p.shape != r.shape:
            raise ValueError(f"prediction shape {p.shape} differs from reference shape {r.shape}")
        skip_ref = r == self.ignore_index
        nd = self.reference_nodata
        if nd is not None:
            skip_ref |= np.isnan(r) if isinstance(nd, float) and math.isnan(nd) else r == nd
        # a float reference must hold whole class ids; NaN fails every comparison, so it is bad unless nodata
        whole = (r == np.floor(r)) if r.dtype.kind == "f" else True
        bad = ~skip_ref & ~((r >= 0) & (r < self.k) & whole)
        if bad.any():
            raise _reference_error(np.unique(r[bad])[:_SHOWN].tolist(), self.k, self.ignore_index, self.reference_name)
        skip_pred = p == self.prediction_nodata if self.prediction_nodata is not None else np.zeros(p.shape, bool)
        bad = ~skip_pred & ~((p >= 0) & (p < self.k))
        if bad.any():
            raise _prediction_error(np.unique(p[bad])[:_SHOWN].tolist(), self.k, self.prediction_name)
        keep = ~(skip_ref | skip_pred)
        if not keep.any():
            return
        pair = r[keep].astype(np.int64) * self.k + p[keep].astype(np.int64)
        self.conf += np.bincount(pair, minlength=self.k * self.k).reshape(self.k, self.k)


def confusion_matrix(pred: Tensor | np.ndarray, target: Tensor | np.ndarray, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> Tensor:
    """``[K, K]`` int64 confusion matrix of one batch (rows = reference, columns = prediction).

    Torch tensors are counted on their device (one bincount, the result on that device); numpy
    arrays go through :class:`ConfusionAccumulator`. Predictions have no nodata here: every
    prediction on a scored pixel must be a class.
    """
    import torch

    if isinstance(pred, np.ndarray) and isinstance(target, np.ndarray):
        acc = ConfusionAccumulator(num_classes, ignore_index=ignore_index, prediction_nodata=None)
        acc.update(pred, target)
        return torch.from_numpy(acc.conf)
    p, t = torch.as_tensor(pred), torch.as_tensor(target)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {tuple(p.shape)} differs from reference shape {tuple(t.shape)}")
    p, t = p.reshape(-1).to(t.device), t.reshape(-1)
    skip = t == ignore_index
    whole = (t == t.floor()) if t.is_floating_point() else True
    bad = ~skip & ~((t >= 0) & (t < num_classes) & whole)
    if bool(bad.any()):
        raise _reference_error(torch.unique(t[bad])[:_SHOWN].tolist(), num_classes, ignore_index, "reference")
    p, t = p[~skip], t[~skip]
    bad = (p < 0) | (p >= num_classes)
    if bool(bad.any()):
        raise _prediction_error(torch.unique(p[bad])[:_SHOWN].tolist(), num_classes, "prediction")
    pair = t.to(torch.int64) * num_classes + p.to(torch.int64)
    return torch.bincount(pair, minlength=num_classes * num_classes).view(num_classes, num_classes)
