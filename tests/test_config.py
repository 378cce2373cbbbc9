"""Config loading: YAML -> typed dataclasses, validation errors name the offending key."""

from pathlib import Path

import pytest

from rsseg.config import Config, apply_overrides
from rsseg.errors import RsSegError
from rsseg.runconfig import config_from_dict, load_config, training_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_are_the_paper_protocol():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.optim.lr == 5e-4 and cfg.optim.weight_decay == 0.01 and cfg.optim.batch_size == 16
    assert cfg.optim.crop_size == 512 and cfg.optim.scales == [0.5, 0.75, 1.0, 1.25, 1.5]
    assert cfg.loss.regularizers.in2nect.weight == 0.2
    assert cfg.loss.regularizers.enabled() == []


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    method = path.stem
    if method in ("in2nect", "ceco", "rr", "nc"):
        assert cfg.loss.regularizers.enabled() == [method]
    assert len(cfg.dataset.classes) == len(cfg.dataset.colors)


def test_base_merges_and_file_wins():
    cfg = load_config(CONFIGS / "loveda" / "in2nect.yaml")
    assert cfg.dataset.name == "loveda" and len(cfg.dataset.classes) == 7
    assert cfg.loss.regularizers.in2nect.enabled and cfg.optim.max_epochs == 50


def test_unknown_key_is_named(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("loss:\n  regularizers:\n    in2nect:\n      wieght: 0.3\n")
    with pytest.raises(RsSegError, match=r"loss\.regularizers\.in2nect\.wieght"):
        load_config(p)


@pytest.mark.parametrize(
    "data, key",
    [
        ({"optim": {"lr": "fast"}}, "optim.lr"),
        ({"optim": {"batch_size": 2.5}}, "optim.batch_size"),
        ({"model": {"pretrained": "yes"}}, "model.pretrained"),
        ({"dataset": {"classes": "building"}}, "dataset.classes"),
        ({"dataset": {"name": "imagenet"}}, "dataset.name"),
        ({"dataset": {"colors": ["#000000", "red"]}}, r"dataset.colors\[1\]"),
        ({"inference": {"tile": 256, "overlap": 256}}, "inference.overlap"),
    ],
)
def test_bad_type_or_value_is_named(data, key):
    with pytest.raises(RsSegError, match=key):
        config_from_dict(data)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(RsSegError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [unclosed\n")
    with pytest.raises(RsSegError, match="not valid YAML"):
        load_config(bad)


def test_overrides_apply_on_top_and_are_typed(tmp_path):
    cfg = load_config(CONFIGS / "folder" / "ce.yaml", ["optim.lr=1e-3", "loss.regularizers.rr.enabled=true"])
    assert cfg.optim.lr == 0.001 and cfg.loss.regularizers.enabled() == ["rr"]
    with pytest.raises(RsSegError, match="key=value"):
        apply_overrides({}, ["optim.lr"])
    with pytest.raises(RsSegError, match="optim.epochs"):
        load_config(None, ["optim.epochs=3"])


def test_train_defaults_follow_the_dataset_spec():
    """Every dataset trains the baseline by default (no study has passed the decision rule in
    docs/science.md); -r and -c override it."""

    assert training_config(dataset="loveda", regularizers=["in2nect"]).loss.regularizers.enabled() == ["in2nect"]
    for name in ("loveda", "potsdam", "vaihingen", "folder"):
        assert training_config(dataset=name).loss.regularizers.enabled() == []
    assert training_config().loss.regularizers.enabled() == []  # no dataset: the user folder's baseline
    assert training_config(str(CONFIGS / "loveda" / "ce.yaml")).loss.regularizers.enabled() == []


def test_config_errors_are_value_errors_and_datasets_come_from_the_registry():
    from rsseg.errors import ConfigError

    with pytest.raises(ValueError, match="dataset.name"):
        config_from_dict({"dataset": {"name": "landsat"}})
    with pytest.raises(ConfigError, match="unknown dataset 'landsat'"):
        training_config(dataset="landsat")
    # a benchmark config names the dataset; the spec fills in its classes (LoveDA: 7, barren #9f81b7)
    cfg = load_config(CONFIGS / "loveda" / "ce.yaml")
    assert cfg.dataset.colors[cfg.dataset.classes.index("barren")] == "#9f81b7"
    assert load_config(CONFIGS / "potsdam" / "ce.yaml").dataset.classes[2] == "low vegetation"
