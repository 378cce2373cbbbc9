"""The science of training as a LightningModule: model, segmentation loss, regularizers, metrics.

Devices, precision, checkpoints and logging are engineering and live in :mod:`rsseg.training.fit`.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from rsseg.checkpoint import META_KEY, ModelMeta
from rsseg.config import Config
from rsseg.errors import ConfigError
from rsseg.losses import SegmentationLoss, build_regularizers, median_frequency_weights
from rsseg.metrics import CollapseStats, confusion_matrix, default_exclusions, segmentation_scores
from rsseg.models import build_model


def _is_no_decay(name: str, param: Tensor) -> bool:
    # biases, norm scales/shifts and other 1-D parameters (e.g. fusion weights) carry no decay
    return param.ndim <= 1 or name.endswith(".bias")


class SegmentationTask(L.LightningModule):
    """UNetFormer + ``seg(logits, aux) + sum_r regularizer_r(embedding, mask)``.

    Batches are ``{"image": [B,C,H,W] float, "mask": [B,H,W] int64 (255 = ignore)}``.
    The regularizers act on the model's embedding, the pixel classifier's input. Validation
    accumulates a confusion matrix and the collapse statistics of that embedding (summed over DDP
    ranks), and logs per-class IoU/F1, OA, mIoU, mF1 and the diagnostics of
    :mod:`rsseg.metrics.collapse` (``val/NC1``, ``val/delta_inter``, ...) once per epoch.
    """

    def __init__(self, cfg: Config, meta: ModelMeta, log_region_prior: Tensor | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.meta = meta
        k = meta.num_classes
        self.model = build_model(cfg.model, num_classes=k, in_channels=meta.in_channels)
        self.seg_loss = SegmentationLoss(
            k,
            mode=cfg.loss.seg,
            label_smoothing=cfg.loss.label_smoothing,
            aux_weight=cfg.loss.aux_weight,
            ignore_index=meta.ignore_index,
            class_weights=self._class_weights(cfg, meta),
        )
        self.regularizers = build_regularizers(
            cfg.loss.regularizers,
            num_classes=k,
            embed_dim=cfg.model.embed_dim,
            log_region_prior=log_region_prior,
            ignore_index=meta.ignore_index,
            seed=cfg.optim.seed,
        )
        for reg in self.regularizers.values():
            reg.attach(self.model)
        self._conf: Tensor | None = None
        self._collapse: CollapseStats | None = None

    @staticmethod
    def _class_weights(cfg: Config, meta: ModelMeta) -> Tensor | None:
        if cfg.loss.class_weights == "none":
            return None
        if not meta.class_pixel_freq:
            raise ConfigError("loss.class_weights needs the training pixel frequencies (dataset statistics), "
                             "which this run has none of: set loss.class_weights=none")
        return median_frequency_weights(meta.class_pixel_freq)

    def forward(self, x: Tensor) -> Any:
        return self.model(x)

    # -- training ---------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        # each rank samples its own pixels, reproducibly: one stream per (seed, rank)
        for i, reg in enumerate(self.regularizers.values()):
            if reg.generator is not None:
                reg.generator.manual_seed(self.cfg.optim.seed + 1000 * self.global_rank + 7 * i + 2)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        image, mask = batch["image"], batch["mask"]
        out = self.model(image)
        terms = dict(self.seg_loss(out["logits"], mask, out.get("aux")))
        for reg in self.regularizers.values():
            terms.update(reg(out["embedding"], mask))
        loss = torch.stack([v.float() for v in terms.values()]).sum()
        bs = image.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        for name, value in terms.items():
            self.log(f"train/{name}", value.detach(), prog_bar=name not in ("ce", "dice", "aux"), batch_size=bs)
        return loss

    # -- validation -------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        k = self.meta.num_classes
        self._conf = torch.zeros(k, k, dtype=torch.int64, device=self.device)
        self._collapse = CollapseStats(k, self.cfg.model.embed_dim, self.meta.ignore_index)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        image, mask = batch["image"], batch["mask"]
        logits, embedding = self.model.forward_with_embedding(image)
        pred = logits.argmax(1)
        self._conf += confusion_matrix(pred, mask, self.meta.num_classes, self.meta.ignore_index).to(self._conf)
        self._collapse.update(embedding.float(), mask)
        loss = self.seg_loss(logits, mask)
        self.log("val/loss", torch.stack(list(loss.values())).sum(), batch_size=image.shape[0], sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        conf = self._conf
        if self.trainer.world_size > 1:
            conf = self.all_gather(conf).sum(0)
        exclude = default_exclusions(self.cfg.dataset.name, self.meta.classes)
        scores = segmentation_scores(conf.cpu(), self.meta.classes, exclude=exclude)
        self.log("val/mIoU", scores["miou"], sync_dist=False)
        self.log("val/mF1", scores["mf1"], sync_dist=False)
        self.log("val/OA", scores["oa"], sync_dist=False)
        # logs and checkpoints keep fractions (as report.json); the progress bar shows percent, as
        # the end-of-training summary and the Markdown reports do
        self.log("mIoU %", 100 * scores["miou"], prog_bar=True, logger=False, sync_dist=False)
        self.log("OA %", 100 * scores["oa"], prog_bar=True, logger=False, sync_dist=False)
        for name, row in scores["per_class"].items():
            for metric, label in (("iou", "IoU"), ("f1", "F1"), ("precision", "precision"), ("recall", "recall")):
                if row[metric] == row[metric]:  # NaN for classes absent from this validation set: not logged
                    self.log(f"val/{label}/{name}", row[metric], sync_dist=False)
        if self.trainer.world_size > 1:
            self._collapse.all_reduce(self.device)
        if int(self._collapse.count.sum()) == 0:
            return
        diag = self._collapse.compute(self.model.classifier_weight)
        for key, value in diag.items():
            if key != "num_classes_present" and value == value:  # NaN (< 2 classes present) is not logged
                self.log(f"val/{'NC1' if key == 'nc1' else key}", float(value), sync_dist=False)

    # -- optimisation -----------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        o = self.cfg.optim
        backbone = {id(p) for p in self.model.backbone_parameters()}
        groups: dict[tuple[bool, bool], list[Tensor]] = {}
        named = list(self.model.named_parameters()) + [
            (f"regularizers.{n}", p) for n, p in self.regularizers.named_parameters()
        ]
        for name, p in named:
            if not p.requires_grad:
                continue
            no_decay = not o.decay_norm_bias and _is_no_decay(name, p)
            groups.setdefault((id(p) in backbone, no_decay), []).append(p)
        param_groups = [
            {
                "params": params,
                "lr": o.lr * (o.backbone_lr_factor if is_backbone else 1.0),
                "weight_decay": 0.0 if no_decay else o.weight_decay,
            }
            for (is_backbone, no_decay), params in groups.items()
        ]
        if o.optimizer == "adamw":
            opt = torch.optim.AdamW(param_groups, lr=o.lr, weight_decay=o.weight_decay)
        elif o.optimizer == "adam":
            opt = torch.optim.Adam(param_groups, lr=o.lr)
        else:
            opt = torch.optim.SGD(param_groups, lr=o.lr, momentum=0.9)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": self._scheduler(opt), "interval": "epoch"}}

    def _scheduler(self, opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        o = self.cfg.optim
        total, warm = max(1, o.max_epochs), max(0, o.warmup_epochs)

        def factor(epoch: int) -> float:
            if epoch < warm:
                return (epoch + 1) / (warm + 1)
            t = (epoch - warm) / max(1, total - warm)
            if o.schedule == "cosine":
                return 0.5 * (1 + torch.cos(torch.tensor(torch.pi * min(t, 1.0))).item())
            if o.schedule == "poly":
                return max(0.0, 1 - t) ** 0.9
            return 1.0

        return torch.optim.lr_scheduler.LambdaLR(opt, factor)

    # -- checkpoints ------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[META_KEY] = self.meta.to_dict()
