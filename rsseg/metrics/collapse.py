"""Neural-collapse diagnostics of the classifier's input embedding, accumulated over a dataset.

Definitions (K = classes present, ``mu_k`` class means, ``mu_G`` the global PIXEL mean, as In2NeCT
and CeCo centre; ``W [K, D]`` the pixel classifier's weights):

- ``nc1`` (Papyan et al. 2020; Liu et al. Sec. 2.1): ``Tr(Sigma_W Sigma_B^+) / K`` with
  ``Sigma_B = Avg_k (mu_k - mu_G)(mu_k - mu_G)^T`` and ``Sigma_W = Avg_k Sigma_k`` (each class's
  covariance weighs the same: Papyan's ``Ave_{i,c}`` on balanced data).
- ``delta_inter`` (In2NeCT Table 2; CeCo's maximal-angle gap, Appendix A):
  ``Avg_{k != k'} |cos(mu_k - mu_G, mu_k' - mu_G) + 1/(K-1)|``.
- ``delta_intra`` (In2NeCT Table 2): ``Avg_k Avg_i ||(z_ki - mu_k)(z_ki - mu_k)^T||_F
  = Avg_k Tr(Sigma_k)`` of the embedding; ``delta_intra_unit``: the same on L2-normalised
  embeddings (scale-free, comparable between runs whose embeddings differ in norm).
- ``equiangularity`` / ``equinorm`` of the centred means (CeCo Fig. 2, Papyan NC2):
  ``Std_{k != k'} cos`` and ``Std_k ||mu_k - mu_G|| / Avg_k ||mu_k - mu_G||``; the same of the
  classifier rows (``w_equiangularity``, ``w_equinorm``, ``w_max_angle``).
- ``nc3`` (self-duality, Papyan NC3): ``|| W / ||W||_F - M / ||M||_F ||_F^2`` with ``M`` the
  centred class means (rows of present classes).

:func:`collapse_diagnostics` measures a model over a dataset (what ``rsseg evaluate -m`` reports);
training validation uses :class:`CollapseStats` directly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import Tensor

from rsseg.constants import IGNORE_INDEX
from rsseg.losses.centers import flat_class_index, labels_to_embedding

#: diagnostic keys that need at least two present classes (NaN otherwise)
GEOMETRIC_KEYS = ("nc1", "delta_inter", "equiangularity", "equinorm")
WEIGHT_KEYS = ("w_equiangularity", "w_equinorm", "w_max_angle", "nc3")


def _angles(vectors: Tensor) -> tuple[float, float, float]:
    """(Std cos, Avg |cos + 1/(K-1)|, Std norm / Avg norm) over the rows of ``vectors [K, D]``."""
    k = vectors.shape[0]
    norms = vectors.norm(dim=1)
    unit = torch.nn.functional.normalize(vectors, dim=1)
    cos = (unit @ unit.T)[~torch.eye(k, dtype=torch.bool)]
    return (
        float(cos.std(unbiased=False)),
        float((cos + 1.0 / (k - 1)).abs().mean()),
        float(norms.std(unbiased=False) / norms.mean().clamp_min(1e-12)),
    )


class CollapseStats:
    """Per-class float64 sufficient statistics: ``n_k``, ``sum z``, ``sum z z^T`` (raw embedding)
    and ``sum zhat``, ``sum ||zhat||^2`` (L2-normalised embedding).

    ``update(embedding [B, D, h, w], labels [B, H, W])`` accepts labels at embedding or full
    resolution (brought to the embedding grid by :func:`rsseg.losses.labels_to_embedding`);
    ``all_reduce()`` sums the statistics over DDP ranks; ``compute`` uses only classes seen.
    """

    def __init__(self, num_classes: int, dim: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.dim = dim
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        k, d = self.num_classes, self.dim
        self.count = torch.zeros(k, dtype=torch.float64)
        self.sum = torch.zeros(k, d, dtype=torch.float64)
        self.outer = torch.zeros(k, d, d, dtype=torch.float64)
        self.sum_unit = torch.zeros(k, d, dtype=torch.float64)
        self.sq_unit = torch.zeros(k, dtype=torch.float64)

    def _tensors(self) -> list[Tensor]:
        return [self.count, self.sum, self.outer, self.sum_unit, self.sq_unit]

    @torch.no_grad()
    def update(self, embedding: Tensor, labels: Tensor) -> None:
        if embedding.ndim != 4 or embedding.shape[1] != self.dim:
            raise ValueError(f"embedding must have shape [B, {self.dim}, h, w], got {tuple(embedding.shape)}")
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

    def all_reduce(self, device: torch.device | str = "cpu") -> None:
        """Sum the statistics over DDP ranks (no-op without an initialised process group).

        ``device``: where the collective runs (the rank's GPU under NCCL, the CPU under gloo).
        """
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        for t in self._tensors():
            buf = t.to(device)
            dist.all_reduce(buf)
            t.copy_(buf.cpu())

    def compute(self, classifier_weight: Tensor | None = None) -> dict[str, float]:
        """The diagnostics of the module docstring (``classifier_weight [num_classes, D]`` adds
        the ``w_*`` keys and ``nc3``). Geometric terms are NaN with fewer than two present classes."""
        present = self.count > 0
        k = int(present.sum())
        if k == 0:
            raise ValueError("no valid pixel was accumulated: collapse statistics need labelled pixels")
        n = self.count[present]
        mu = self.sum[present] / n[:, None]
        cov = self.outer[present] / n[:, None, None] - mu[:, :, None] * mu[:, None, :]
        mean_unit = self.sum_unit[present] / n[:, None]
        out = {
            "num_classes_present": float(k),
            "delta_intra": float(torch.diagonal(cov, dim1=1, dim2=2).sum(1).mean()),
            "delta_intra_unit": float((self.sq_unit[present] / n - mean_unit.pow(2).sum(1)).mean()),
        }
        if k < 2:
            out.update(dict.fromkeys(GEOMETRIC_KEYS, math.nan))
            if classifier_weight is not None:
                out.update(dict.fromkeys(WEIGHT_KEYS, math.nan))
            return out
        mu_g = self.sum[present].sum(0) / n.sum()
        centred = mu - mu_g
        sigma_w = cov.mean(0)
        sigma_b = centred.T @ centred / k
        out["nc1"] = float(torch.trace(sigma_w @ torch.linalg.pinv(sigma_b, hermitian=True)) / k)
        out["equiangularity"], out["delta_inter"], out["equinorm"] = _angles(centred)
        if classifier_weight is not None:
            w = classifier_weight.detach().to("cpu", torch.float64)
            if w.shape != (self.num_classes, self.dim):
                raise ValueError(
                    f"classifier weight must have shape [{self.num_classes}, {self.dim}], got {tuple(w.shape)}"
                )
            w = w[present]
            out["w_equiangularity"], out["w_max_angle"], out["w_equinorm"] = _angles(w)
            out["nc3"] = float((w / w.norm() - centred / centred.norm()).pow(2).sum())
        return out


@torch.no_grad()
def collapse_diagnostics(
    model: torch.nn.Module,
    batches: Iterable[dict[str, Tensor]],
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    device: torch.device | str = "cpu",
    window: int = 1024,
) -> dict[str, float]:
    """Collapse diagnostics of ``model``'s classifier input over ``batches``.

    ``model``: a :class:`~rsseg.models.UNetFormer` (``forward_with_embedding``, ``embed_dim``,
    ``classifier_weight``), put in eval mode here. ``batches`` yield ``{"image": [C, H, W] or
    [B, C, H, W] normalised float, "mask": [H, W] or [B, H, W] int64}`` (e.g. the datamodule's
    ``eval_tiles``); images larger than ``window`` are measured window by window (non-overlapping,
    so memory stays bounded on 6000 x 6000 ISPRS tiles). Returns the dict of
    :meth:`CollapseStats.compute` with the classifier keys.
    """
    was_training = model.training
    model.eval()
    stats = CollapseStats(num_classes, model.embed_dim, ignore_index)
    try:
        for batch in batches:
            image, mask = batch["image"], batch["mask"]
            if image.ndim == 3:
                image, mask = image[None], mask[None]
            height, width = image.shape[-2:]
            for y in range(0, height, window):
                for x in range(0, width, window):
                    crop = image[..., y : y + window, x : x + window].to(device)
                    _, embedding = model.forward_with_embedding(crop)
                    stats.update(embedding.float(), mask[..., y : y + window, x : x + window])
    finally:
        model.train(was_training)
    return stats.compute(model.classifier_weight)
