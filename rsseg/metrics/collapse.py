"""Neural-collapse diagnostics accumulated over a validation set.

Definitions follow Papyan et al. (NC1-NC3, as restated by Liu et al. Sec. 2.1), CeCo Sec. 5.2
(equiangularity ``Std cos`` and maximal angle ``Avg |cos + 1/(K-1)|``) and In2NeCT Table 2
(``Delta_inter`` = that maximal-angle gap, ``Delta_intra`` = mean within-class scatter of
L2-normalised embeddings).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rsseg.errors import RsSegError
from rsseg.losses.centers import flat_class_index, labels_to_embedding


class CollapseStats:
    """Per-class float64 sufficient statistics: ``n_k``, ``sum z``, ``sum z z^T`` (raw embedding)
    and ``sum zhat``, ``sum ||zhat||^2`` (L2-normalised embedding).

    ``update(embedding [B, D, h, w], labels [B, H, W])`` accepts labels at embedding or full
    resolution (brought to the embedding grid by :func:`rsseg.losses.labels_to_embedding`).
    ``compute`` uses only classes seen at least once.

    The global mean ``mu_G`` is the mean of the class means (class-balanced) by default, as in
    Liu et al. (``mu_C``); ``global_mean="pixel"`` uses the pixel mean (Papyan et al.'s ``mu_G``),
    which segmentation's imbalance drags towards the head classes. ``Sigma_W`` is likewise the
    average of the per-class covariances (each class weighs the same).
    """

    def __init__(self, num_classes: int, dim: int, ignore_index: int = 255, global_mean: str = "class") -> None:
        if global_mean not in ("class", "pixel"):
            raise RsSegError(f"global_mean must be 'class' or 'pixel', got {global_mean!r}")
        self.num_classes = num_classes
        self.dim = dim
        self.ignore_index = ignore_index
        self.global_mean = global_mean
        self.reset()

    def reset(self) -> None:
        k, d = self.num_classes, self.dim
        self.count = torch.zeros(k, dtype=torch.float64)
        self.sum = torch.zeros(k, d, dtype=torch.float64)
        self.outer = torch.zeros(k, d, d, dtype=torch.float64)
        self.sum_unit = torch.zeros(k, d, dtype=torch.float64)
        self.sq_unit = torch.zeros(k, dtype=torch.float64)

    @torch.no_grad()
    def update(self, embedding: Tensor, labels: Tensor) -> None:
        if embedding.ndim != 4 or embedding.shape[1] != self.dim:
            raise RsSegError(f"embedding must have shape [B, {self.dim}, h, w], got {tuple(embedding.shape)}")
        labels = labels_to_embedding(labels, tuple(embedding.shape[-2:]))
        index = flat_class_index(labels, self.num_classes, self.ignore_index).cpu()
        z = embedding.detach().permute(0, 2, 3, 1).reshape(-1, self.dim).to("cpu", torch.float64)
        keep = index < self.num_classes
        z, index = z[keep], index[keep]
        unit = torch.nn.functional.normalize(z, dim=1)
        self.count += torch.bincount(index, minlength=self.num_classes).double()
        self.sum.index_add_(0, index, z)
        self.sum_unit.index_add_(0, index, unit)
        self.sq_unit.index_add_(0, index, unit.pow(2).sum(1))
        # one Gram matrix per present class (K is small; a scatter of D x D outer products
        # would need N x D x D memory)
        for k in torch.unique(index).tolist():
            zk = z[index == k]
            self.outer[k] += zk.T @ zk

    def compute(self, classifier_weight: Tensor | None = None) -> dict[str, float]:
        """Diagnostics over present classes (``K`` below is their number).

        - ``nc1``: ``(1/K) Tr(Sigma_W Sigma_B^+)``.
        - ``equinorm``: std / mean of the norms of the centred class means ``mu_k - mu_G``.
        - ``equiangularity``: ``Std_{k != k'} cos(zhat_k, zhat_k')`` of centred means.
        - ``max_angle`` (= In2NeCT ``Delta_inter``): ``Avg_{k != k'} |cos + 1/(K-1)|``.
        - ``delta_intra``: ``(1/K) sum_k Tr(Sigma_W,k)`` of L2-normalised embeddings.
        - ``nc3`` (with ``classifier_weight [num_classes, D]``): ``|| W/||W|| - M/||M|| ||_F^2`` with
          ``M`` the centred class means (rows of present classes only).

        Geometric terms need two present classes and are NaN otherwise.
        """
        present = self.count > 0
        k = int(present.sum())
        if k == 0:
            raise RsSegError("no valid pixel was accumulated: collapse statistics need labelled pixels")
        n = self.count[present]
        mu = self.sum[present] / n[:, None]
        cov = self.outer[present] / n[:, None, None] - mu[:, :, None] * mu[:, None, :]
        mean_unit = self.sum_unit[present] / n[:, None]
        delta_intra = float((self.sq_unit[present] / n - mean_unit.pow(2).sum(1)).mean())
        out = {"num_classes_present": float(k), "delta_intra": delta_intra}
        nan_keys = ("nc1", "equinorm", "equiangularity", "max_angle")
        if k < 2:
            out.update({key: math.nan for key in nan_keys})
            if classifier_weight is not None:
                out["nc3"] = math.nan
            return out
        mu_g = mu.mean(0) if self.global_mean == "class" else self.sum[present].sum(0) / n.sum()
        centred = mu - mu_g
        sigma_w = cov.mean(0)
        sigma_b = centred.T @ centred / k
        out["nc1"] = float(torch.trace(sigma_w @ torch.linalg.pinv(sigma_b, hermitian=True)) / k)
        norms = centred.norm(dim=1)
        out["equinorm"] = float(norms.std(unbiased=False) / norms.mean())
        unit = torch.nn.functional.normalize(centred, dim=1)
        cos = (unit @ unit.T)[~torch.eye(k, dtype=torch.bool)]
        out["equiangularity"] = float(cos.std(unbiased=False))
        out["max_angle"] = float((cos + 1.0 / (k - 1)).abs().mean())
        if classifier_weight is not None:
            w = classifier_weight.detach().to("cpu", torch.float64)
            if w.shape != (self.num_classes, self.dim):
                raise RsSegError(
                    f"classifier weight must have shape [{self.num_classes}, {self.dim}], got {tuple(w.shape)}"
                )
            w = w[present]
            out["nc3"] = float((w / w.norm() - centred / centred.norm()).pow(2).sum())
        return out
