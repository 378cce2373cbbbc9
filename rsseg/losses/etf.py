"""The fixed simplex equiangular tight frame (ETF) classifier shared by In2NeCT and CeCo.

In2NeCT (Shen et al.) Eq. 1 / CeCo (Zhong et al., CVPR 2023) Eq. 1:
``M = sqrt(K/(K-1)) U (I_K - 1_K 1_K^T / K)`` with ``U`` (d x K) orthonormal columns.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rsseg.errors import ConfigError


def simplex_etf(num_classes: int, dim: int, generator: torch.Generator | None = None) -> Tensor:
    """Return a random simplex ETF as a ``[K, dim]`` float32 tensor, one vertex per row.

    Rows have unit norm, sum to zero and have Gram matrix ``K/(K-1) I - 1/(K-1) 11^T`` (pairwise
    cosine ``-1/(K-1)``, the maximal equiangular separation). ``U`` comes from the QR
    decomposition of a Gaussian ``dim x K`` matrix drawn from ``generator``. ``dim >= K`` is
    required because ``U`` needs K orthonormal columns (the papers' ``d >= K``).
    """
    if num_classes < 2:
        raise ConfigError(f"a simplex ETF needs at least 2 classes, got num_classes={num_classes}")
    if dim < num_classes:
        raise ConfigError(
            f"a simplex ETF for {num_classes} classes needs an embedding of at least {num_classes} "
            f"dimensions, got {dim}: raise model.embed_dim (or loss.regularizers.ceco.proj_dim)"
        )
    k = num_classes
    gauss = torch.randn(dim, k, generator=generator, dtype=torch.float64)
    u, r = torch.linalg.qr(gauss)
    # QR's sign convention is not unique; fixing diag(r) > 0 makes U Haar-distributed.
    u = u * torch.sign(torch.diagonal(r)).unsqueeze(0)
    centering = torch.eye(k, dtype=torch.float64) - torch.full((k, k), 1.0 / k, dtype=torch.float64)
    m = math.sqrt(k / (k - 1)) * (u @ centering)  # [dim, K]
    return m.T.contiguous().float()
