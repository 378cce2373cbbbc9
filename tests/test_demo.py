"""A CI-sized run of `rsseg demo`: train -> predict -> evaluate on the bundled sample tiles."""

import json

import pytest
import rasterio
from click.testing import CliRunner
from rio_cogeo.cogeo import cog_validate

from rsseg.cli.main import main

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end(tmp_path, sample_tiles, monkeypatch):
    monkeypatch.setenv("RSSEG_CACHE_DIR", str(tmp_path / "cache"))
    res = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "demo"), "--samples", str(sample_tiles), "--epochs", "1"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "demo"
    classes = out / "tanzania_classes.tif"
    valid, errors, _ = cog_validate(classes)
    assert valid, errors
    with rasterio.open(classes) as src, rasterio.open(sample_tiles / "tanzania" / "image.tif") as ref:
        assert src.crs == ref.crs and src.transform == ref.transform
    report = json.loads((out / "evaluation" / "report.json").read_text())
    assert sum(map(sum, report["confusion_matrix"])) == 1024 * 1024
    assert (out / "tanzania_buildings.gpkg").is_file() and (out / "evaluation" / "confusion.png").is_file()
    assert "| building |" in res.output and f"rsseg app --data-dir {out.resolve()} " in res.output
    # the output folder alone serves the viewer: the crop and its mask beside the checkpoint
    for name in ("image", "mask"):
        with rasterio.open(out / f"tanzania_{name}.tif") as copy, rasterio.open(sample_tiles / "tanzania" / f"{name}.tif") as orig:
            assert (copy.read() == orig.read()).all() and copy.transform == orig.transform
