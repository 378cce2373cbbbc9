"""The worked examples of docs/architecture.md: a dataset with its own option and a regularizer,
each one module's worth of code (here, this test module), registered, configured, checked and
built, then unregistered."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
from conftest import write_raster
from torch import Tensor

from rsseg.config import DatasetConfig
from rsseg.data.datasets import DATASETS, DatasetSpec, build_datamodule, register_dataset
from rsseg.data.raster import TilePair, check_pair
from rsseg.data.splits import split_holdout
from rsseg.errors import ConfigError
from rsseg.losses.regularizers import REGULARIZERS, BuildContext, _Regularizer, build_regularizers, register_regularizer
from rsseg.runconfig import config_from_dict

# ------------------------------------------------------------------ a dataset with an option


@dataclass
class StripesOptions:
    #: which tiles to read: the even-numbered, the odd-numbered or all
    parity: Literal["even", "odd", "all"] = "all"


class Stripes(DatasetSpec):
    """Tiles ``<root>/tile<i>.tif`` + ``<root>/tile<i>_mask.tif``, two classes; labels stored +1."""

    name = "stripes"
    title = "Stripes"
    classes = ("sea", "land")
    colors = ("#0000ff", "#00ff00")
    file_bands = ("red", "green", "blue")
    bands = ("red", "green", "blue")
    layout = "<root>/tile<i>.tif and <root>/tile<i>_mask.tif"
    options = StripesOptions

    def pairs(self, ds: DatasetConfig, split: str, download: bool = False) -> list[TilePair]:
        root = Path(ds.root or "")
        images = sorted(p for p in root.glob("tile*.tif") if not p.stem.endswith("_mask"))
        keep = {"even": 0, "odd": 1}.get(ds.parity)
        pairs = []
        for i, image in enumerate(images):
            if keep is None or i % 2 == keep:
                mask = image.with_name(f"{image.stem}_mask.tif")
                h, w, _, _ = check_pair(str(image), str(mask))
                pairs.append(TilePair(image.stem, str(image), str(mask), h, w, (1, 2, 3), self.name))
        return split_holdout(pairs, split, ds.val_fraction)

    def decode_labels(self, src, window, num_classes, ignore_index) -> np.ndarray:  # noqa: ANN001
        return (src.read(1, window=window) - 1).astype(np.uint8)

    def validate(self, ds: DatasetConfig) -> None:
        if ds.parity != "all" and ds.val_fraction > 0.5:
            raise ConfigError("config key 'dataset.parity' halves the tiles: keep dataset.val_fraction <= 0.5")


# ------------------------------------------------------------------ a regularizer


@dataclass
class MeanNormConfig:
    """Pull the embedding's mean norm towards ``target``."""

    enabled: bool = False
    weight: float = 0.1
    target: float = 1.0


class MeanNorm(_Regularizer):
    Section = MeanNormConfig

    def __init__(self, num_classes: int, target: float = MeanNormConfig.target, weight: float = MeanNormConfig.weight,
                 ignore_index: int = 255) -> None:
        super().__init__(num_classes, weight, ignore_index, sync_centers=False)
        self.target = target

    @classmethod
    def from_config(cls, c: MeanNormConfig, ctx: BuildContext) -> MeanNorm:
        return cls(ctx.num_classes, target=c.target, weight=c.weight, ignore_index=ctx.ignore_index)

    def terms(self, embedding: Tensor, labels: Tensor) -> dict[str, Tensor]:
        return {"mean_norm": self.weight * (embedding.float().norm(dim=1).mean() - self.target) ** 2}


@pytest.fixture
def registered():
    register_dataset(Stripes)
    register_regularizer("mean_norm")(MeanNorm)
    try:
        yield
    finally:
        DATASETS.remove("stripes")
        REGULARIZERS.remove("mean_norm")


def _stripes(root: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        write_raster(root / f"tile{i}.tif", rng.integers(0, 255, (3, 64, 64), dtype=np.uint8))
        write_raster(root / f"tile{i}_mask.tif", rng.integers(1, 3, (64, 64), dtype=np.uint8))
    return root


def test_a_dataset_and_a_regularizer_are_one_module_each(registered, tmp_path):
    root = _stripes(tmp_path / "stripes")
    cfg = config_from_dict({
        "dataset": {"name": "stripes", "root": str(root), "parity": "even", "val_fraction": 0.34},
        "loss": {"regularizers": {"mean_norm": {"enabled": True, "target": 2.0}}},
        "optim": {"crop_size": 32, "batch_size": 2, "scales": [1.0]},
    })
    # the spec fills in its classes; its option is a key of ``dataset``, the regularizer's section
    # a key of ``loss.regularizers``, both written back out with the config
    assert cfg.dataset.classes == ["sea", "land"] and cfg.dataset.parity == "even"
    assert cfg.to_dict()["dataset"]["parity"] == "even"
    assert cfg.to_dict()["loss"]["regularizers"]["mean_norm"] == {"enabled": True, "weight": 0.1, "target": 2.0}
    assert cfg.loss.regularizers.enabled() == ["mean_norm"]
    assert config_from_dict(cfg.to_dict()) == cfg

    # checks: the option's type and choices where it is declared, the spec's own rule in validate
    with pytest.raises(ConfigError, match=r"dataset\.parity' must be one of even, odd, all"):
        config_from_dict({"dataset": {"name": "stripes", "parity": "prime"}})
    with pytest.raises(ConfigError, match="val_fraction <= 0.5"):
        config_from_dict({"dataset": {"name": "stripes", "parity": "odd", "val_fraction": 0.6}})
    with pytest.raises(ConfigError, match=r"mean_norm\.target' must be a number"):
        config_from_dict({"loss": {"regularizers": {"mean_norm": {"target": "far"}}}})

    # built: the dataset's pairs through its datamodule (labels by its decoder), the regularizer
    dm = build_datamodule(cfg)
    assert len(dm.pairs("train")) + len(dm.pairs("val")) == 3  # tiles 0, 2, 4
    tile = next(dm.eval_tiles("val"))
    assert set(np.unique(tile["mask"].numpy())) <= {0, 1}
    regs = build_regularizers(cfg.loss.regularizers, num_classes=2, embed_dim=8)
    terms = regs["mean_norm"](torch.ones(2, 8, 4, 4), torch.zeros(2, 16, 16, dtype=torch.long))
    torch.testing.assert_close(terms["mean_norm"], torch.tensor(0.1 * (8 ** 0.5 - 2.0) ** 2))


def test_unregistered_they_are_gone(registered):
    DATASETS.remove("stripes")
    REGULARIZERS.remove("mean_norm")
    try:
        with pytest.raises(ConfigError, match="dataset.name"):
            config_from_dict({"dataset": {"name": "stripes"}})
        with pytest.raises(ConfigError, match="unknown config key 'loss.regularizers.mean_norm'"):
            config_from_dict({"loss": {"regularizers": {"mean_norm": {"enabled": True}}}})
    finally:
        register_dataset(Stripes)
        register_regularizer("mean_norm")(MeanNorm)
