"""Training augmentation on batched tensors (runs wherever the batch is: GPU when there is one).

The In2NeCT training protocol (random scale in {0.5, 0.75, 1.0, 1.25, 1.5}, horizontal/vertical
flips, 90-degree rotations, random ``crop_size`` crop) applied per sample with its own random
parameters. Image and mask share the geometry; images are resampled bilinearly and masks with
``nearest-exact`` (pixel-centre aligned), so mask values are never blended and each output mask
pixel is the label of the source pixel nearest to the point the image was sampled at.

Batches reach this step as equal-sized patches ``P x P`` (the datasets crop/pad each tile to P, see
``rsseg.data.datasets``), so collate never sees ragged tensors. Scaling by ``s`` and then cropping
``crop_size`` is done in the cheaper equivalent order: crop a ``crop_size / s`` region of the patch
and resize that to ``crop_size``; when the scaled patch is smaller than ``crop_size`` it is padded
(image 0, i.e. the mean after normalisation; mask ``ignore_index``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from rsseg.constants import IGNORE_INDEX


def _crop_scale_one(
    image: Tensor, mask: Tensor, scale: float, crop: int, ignore_index: int, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """One sample: ``image [C,H,W]``, ``mask [H,W]`` -> ``[C,crop,crop]``, ``[crop,crop]``."""
    _, h, w = image.shape
    region = max(1, round(crop / scale))  # source pixels that end up as one crop side
    rh, rw = min(region, h), min(region, w)
    y = int(torch.randint(0, h - rh + 1, (1,), generator=gen))
    x = int(torch.randint(0, w - rw + 1, (1,), generator=gen))
    img = image[:, y : y + rh, x : x + rw]
    msk = mask[y : y + rh, x : x + rw]
    # output size keeps the sampling ratio 1/scale on both axes even when the region was clipped
    oh, ow = min(crop, round(rh * scale)), min(crop, round(rw * scale))
    if (oh, ow) != (rh, rw):
        img = F.interpolate(img[None], size=(oh, ow), mode="bilinear", align_corners=False)[0]
        msk = F.interpolate(msk[None, None].float(), size=(oh, ow), mode="nearest-exact")[0, 0].to(mask.dtype)
    if (oh, ow) != (crop, crop):
        # random placement of the small scaled patch inside the crop, so padding is not always bottom-right
        py = int(torch.randint(0, crop - oh + 1, (1,), generator=gen))
        px = int(torch.randint(0, crop - ow + 1, (1,), generator=gen))
        pad = (px, crop - ow - px, py, crop - oh - py)
        img = F.pad(img, pad, value=0.0)
        msk = F.pad(msk, pad, value=ignore_index)
    return img, msk


def augment_batch(
    image: Tensor,
    mask: Tensor,
    crop_size: int,
    scales: Sequence[float] = (0.5, 0.75, 1.0, 1.25, 1.5),
    ignore_index: int = IGNORE_INDEX,
    flips: bool = True,
    rotate90: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Randomly scale, crop, flip and rotate a batch, each sample with its own parameters.

    Args:
        image: ``[B, C, H, W]`` float, already normalised.
        mask: ``[B, H, W]`` int64 labels (``ignore_index`` = ignore).
        crop_size: output side length.
        scales: random scale factors, one drawn per sample (In2NeCT / UNetFormer protocol).
        generator: CPU generator for the random parameters (drawn on CPU so a GPU batch is not
            synchronised for every draw).

    Returns:
        ``image [B, C, crop, crop]`` and ``mask [B, crop, crop]`` (int64) on the input device.
    """
    gen = generator if generator is not None else torch.default_generator
    scale_t = torch.tensor(list(scales), dtype=torch.float64)
    out_i, out_m = [], []
    for b in range(image.shape[0]):
        s = float(scale_t[torch.randint(0, len(scale_t), (1,), generator=gen)])
        img, msk = _crop_scale_one(image[b], mask[b], s, crop_size, ignore_index, gen)
        if flips and bool(torch.randint(0, 2, (1,), generator=gen)):
            img, msk = img.flip(-1), msk.flip(-1)
        if flips and bool(torch.randint(0, 2, (1,), generator=gen)):
            img, msk = img.flip(-2), msk.flip(-2)
        k = int(torch.randint(0, 4, (1,), generator=gen)) if rotate90 else 0
        if k:
            img, msk = torch.rot90(img, k, (-2, -1)), torch.rot90(msk, k, (-2, -1))
        out_i.append(img)
        out_m.append(msk)
    return torch.stack(out_i).contiguous(), torch.stack(out_m).contiguous()
