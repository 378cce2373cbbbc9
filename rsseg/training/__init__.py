"""Training: the LightningModule (science) and the trainer set-up (engineering)."""

from rsseg.training.fit import TrainResult, train

__all__ = ["TrainResult", "train"]
