"""Predict on a Dask LocalCluster (2 worker processes, 1 thread each, one cluster for the module):
strips equal the single-process run, a killed worker is survived, a failed run leaves nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

pytest.importorskip("distributed")
pytestmark = pytest.mark.slow  # a LocalCluster of 2 processes: seconds to start, still part of make test

from conftest import run_without_torch, uint8_contract, write_raster  # noqa: E402

from rsseg.checkpoint import ModelMeta, save_model  # noqa: E402
from rsseg.config import Config  # noqa: E402
from rsseg.errors import RsSegError  # noqa: E402
from rsseg.inference import Predictor, predict_file  # noqa: E402
from rsseg.inference import distributed as dist  # noqa: E402
from rsseg.inference.products import RasterWriter  # noqa: E402
from rsseg.inference.settings import PredictSettings  # noqa: E402
from rsseg.inference.windows import Span, WindowPlan, plan_windows  # noqa: E402

TIE = 1e-3  # pixels whose top two class probabilities are this close may differ (batch composition)


class MarginWriter(RasterWriter):
    """A product that needs the probabilities: (top1 - top2) x 255, so workers must ship them."""

    name = "margin"

    def values(self, rows, probs):
        top2 = np.sort(probs.astype(np.float32), axis=0)[-2:]
        return np.rint((top2[1] - top2[0]) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def client():
    with dist.dask_client("local:2") as c:
        yield c


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from rsseg.models import build_model

    torch.manual_seed(0)
    cfg = Config()
    cfg.model.encoder, cfg.model.decode_channels, cfg.model.embed_dim, cfg.model.num_heads = "mobilenetv3_small_050", 32, 16, 4
    cfg.inference.tile, cfg.inference.overlap = 64, 16
    model = build_model(cfg.model, num_classes=3, in_channels=3)
    with torch.no_grad():  # a random classifier is nearly uniform: sharpen it so classes and margins vary
        model.head.classifier.weight.mul_(30)
    meta = ModelMeta(classes=["a", "b", "c"], colors=["#000000", "#ff0000", "#00ff00"], bands=["r", "g", "b"],
                     mean=[0.5] * 3, std=[0.25] * 3, config=cfg.to_dict(), **uint8_contract())
    return save_model(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt", model, meta)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    """A 200 x 150 RGB raster with structure (so classes vary) and a nodata corner."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:200, 0:150]
    img = np.stack([(xx * 2) % 256, (yy * 3) % 256, ((xx + yy) * 5) % 256]).astype(np.float32)
    img = (img * 0.7 + rng.integers(0, 80, img.shape)).clip(1, 255).astype(np.uint8)
    img[:, :20, :30] = 0
    return write_raster(tmp_path_factory.mktemp("in") / "scene.tif", img, nodata=0)


def _outputs(d: Path, vector: bool = True) -> dict[str, Path]:
    out = {"output_path": d / "c.tif", "confidence_path": d / "conf.tif", "report_path": d / "r.json"}
    return {**out, "vector_path": d / "v.gpkg"} if vector else out


def _single(checkpoint: Path, image: Path, out: Path, tile: int, overlap: int, vector: bool = True, products=()):
    out.mkdir()
    p = Predictor.from_checkpoint(checkpoint, device="cpu", tile=tile, overlap=overlap, batch=2)
    return p, predict_file(p, image, **_outputs(out, vector), products=products)


def _compare(single, distributed, predictor: Predictor, image: Path) -> int:
    """Class rasters equal except at near-ties (returned: how many differ); reports and polygons agree."""
    with rasterio.open(single.output_path) as a, rasterio.open(distributed.output_path) as b:
        ca, cb = a.read(1), b.read(1)
        assert (a.profile["transform"], a.crs, a.shape) == (b.profile["transform"], b.crs, b.shape)
        assert a.colormap(1) == b.colormap(1) and a.tags() == b.tags()
    diff = ca != cb
    if diff.any():
        with rasterio.open(image) as src:
            probs = predictor.predict_array(src.read(), return_probs=True)
        top2 = np.sort(probs, axis=0)[-2:]
        assert ((top2[1] - top2[0])[diff] <= TIE).all(), "a pixel differs that is not a near-tie"
    ra, rb = single.report, distributed.report
    assert ra["valid_pixels"] == rb["valid_pixels"] and ra["nodata_pixels"] == rb["nodata_pixels"]
    assert sum(c["pixels"] for c in rb["classes"]) == rb["valid_pixels"]
    if not diff.any():
        assert [c["pixels"] for c in ra["classes"]] == [c["pixels"] for c in rb["classes"]]
    if not diff.any() and single.vector_path is not None:
        import geopandas as gpd

        va, vb = gpd.read_file(single.vector_path), gpd.read_file(distributed.vector_path)
        assert len(va) == len(vb) and va.area.sum() == pytest.approx(vb.area.sum())
    with rasterio.open(single.confidence_path) as a, rasterio.open(distributed.confidence_path) as b:
        assert (a.read(1)[~diff] == b.read(1)[~diff]).all()
    return int(diff.sum())


def test_strips_follow_the_window_grid_and_their_halo_replans_to_the_same_windows():
    for height, tile, overlap, rows in [(1000, 64, 16, 3), (130, 64, 40, 1), (64, 64, 16, 2), (65, 64, 8, 1)]:
        grid = WindowPlan(10, height, tile, overlap)
        strips = grid.row_strips(rows)
        assert strips[0].start == 0 and strips[-1].stop == height
        assert all(s.stop == t.start for s, t in zip(strips, strips[1:]))
        starts = sorted({int(w.row_off) for w in grid.windows})
        for strip in strips:
            halo = grid.halo(strip)
            sub = sorted({int(w.row_off) + halo.start for w in plan_windows(10, halo.size, tile, overlap)})
            assert sub == [s for s in starts if s < strip.stop and s + min(tile, height) > strip.start]
    with pytest.raises(ValueError, match="not a strip"):
        WindowPlan(10, 1000, 64, 16).halo(Span(5, 60))


def test_distributed_strips_equal_the_single_process_run(client, checkpoint, scene, tmp_path):
    predictor, single = _single(checkpoint, scene, tmp_path / "single", 64, 16,
                                products=[MarginWriter(tmp_path / "margin1.tif")])
    (tmp_path / "dask").mkdir()
    seen = []
    model = dist.RemoteModel.plan(checkpoint, PredictSettings(device="cpu", batch=3))
    res = dist.predict_file_dask(client, model, scene, **_outputs(tmp_path / "dask"),
                                 window_rows=2, products=[MarginWriter(tmp_path / "margin2.tif")],
                                 on_progress=lambda d, t: seen.append((d, t)))
    n = seen[-1][1]
    assert n == len(WindowPlan(150, 200, 64, 16).row_strips(2)) == 2 and seen[-1] == (n, n)
    assert res.report["device"] == "dask (cpu workers)"
    differ = _compare(single, res, predictor, scene)
    with rasterio.open(tmp_path / "margin1.tif") as a, rasterio.open(tmp_path / "margin2.tif") as b:
        assert np.abs(a.read(1).astype(int) - b.read(1)).max() <= 1 and a.read(1).std() > 0
    print(f"generated raster: {differ} of {200 * 150} pixels differ (near-ties)")
    assert res.report["nodata_pixels"] == 20 * 30
    # one model load per worker process, not per strip
    loads = client.run(lambda: __import__("rsseg.inference.distributed", fromlist=["LOADS"]).LOADS)
    assert 1 <= sum(loads.values()) <= len(loads)


def test_tanzania_crop_on_two_workers_equals_single_process(client, checkpoint, sample_tiles, tmp_path):
    image = sample_tiles / "tanzania" / "image.tif"
    predictor, single = _single(checkpoint, image, tmp_path / "single", 256, 32, vector=False)
    (tmp_path / "dask").mkdir()
    model = dist.RemoteModel.plan(checkpoint, PredictSettings(tile=256, overlap=32, device="cpu"))
    res = dist.predict_file_dask(client, model, image, **_outputs(tmp_path / "dask", False), window_rows=1)
    differ = _compare(single, res, predictor, image)
    print(f"tanzania crop: {differ} of {1024 * 1024} pixels differ (near-ties)")
    assert differ <= 1024 * 1024 // 1000


def test_a_killed_worker_is_retried_and_the_output_is_complete(client, checkpoint, scene, tmp_path):
    predictor, single = _single(checkpoint, scene, tmp_path / "single", 64, 16)
    pids = client.run(os.getpid)
    killed = []

    def kill_one(done: int, total: int) -> None:
        busy = [addr for addr, keys in client.processing().items() if keys]
        if not killed and busy:  # kill a worker while it computes a strip
            os.kill(pids[busy[0]], signal.SIGKILL)
            killed.append(pids[busy[0]])

    (tmp_path / "dask").mkdir()
    model = dist.RemoteModel.plan(checkpoint, PredictSettings(device="cpu"))
    res = dist.predict_file_dask(client, model, scene, **_outputs(tmp_path / "dask"), window_rows=1,
                                 on_progress=kill_one)
    assert killed
    _compare(single, res, predictor, scene)
    client.wait_for_workers(2, timeout=300)
    assert killed[0] not in client.run(os.getpid).values()


def test_a_failed_run_leaves_nothing_at_the_targets(client, checkpoint, scene, tmp_path):
    model = dist.RemoteModel.plan(checkpoint, PredictSettings(device="cpu"))
    targets = _outputs(tmp_path)

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        dist.predict_file_dask(client, model, scene, **targets, window_rows=1, on_progress=interrupt)
    assert sorted(p.name for p in tmp_path.iterdir()) == []

    # scenes: the second raster fails on its worker; the first scene's outputs are removed too
    one_band = write_raster(tmp_path / "in" / "gray.tif", np.full((1, 40, 40), 7, np.uint8))
    jobs = [(scene, {"output_path": tmp_path / "a.tif", "report_path": tmp_path / "a.json"}),
            (one_band, {"output_path": tmp_path / "b.tif", "report_path": tmp_path / "b.json"})]
    with pytest.raises(RsSegError, match="1 band"):
        dist.predict_scenes_dask(client, model, jobs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_scenes_run_one_task_each(client, checkpoint, scene, tmp_path):
    model = dist.RemoteModel.plan(checkpoint, PredictSettings(device="cpu"))
    other = write_raster(tmp_path / "in" / "b.tif", np.full((3, 70, 90), 120, np.uint8))
    jobs = [(scene, {"output_path": tmp_path / "a.tif", "report_path": tmp_path / "a.json"}),
            (other, {"output_path": tmp_path / "b.tif"})]
    seen = []
    results = dist.predict_scenes_dask(client, model, jobs, on_progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (2, 2) and dist.use_scenes(client, 2) and not dist.use_scenes(client, 1)
    assert [r.output_path for r in results] == [(tmp_path / "a.tif").resolve(), (tmp_path / "b.tif").resolve()]
    assert json.loads((tmp_path / "a.json").read_text())["valid_pixels"] == 200 * 150 - 20 * 30
    with rasterio.open(tmp_path / "b.tif") as b:
        assert b.shape == (70, 90)


def test_cli_runs_on_a_scheduler_address_and_bad_specs_are_one_line(client, checkpoint, scene, tmp_path):
    from click.testing import CliRunner

    from rsseg.cli.main import main

    out = tmp_path / "c.tif"
    res = CliRunner().invoke(main, ["predict", str(scene), "-m", str(checkpoint), "-o", str(out), "--device", "cpu",
                                    "--dask", client.scheduler.address])
    assert res.exit_code == 0, res.output
    assert "on Dask" in res.output and out.is_file()
    for spec, words in [("local:0", "positive integer"), ("host:8786", "scheduler address")]:
        res = CliRunner().invoke(main, ["predict", str(scene), "-m", str(checkpoint), "-o", str(tmp_path / "x.tif"),
                                        "--dask", spec])
        assert res.exit_code == 2 and words in res.output and len(res.output.strip().splitlines()) == 1, res.output


def test_predict_without_dask_imports_nothing_of_dask(checkpoint, scene, tmp_path):
    code = ("import sys; from rsseg.cli.main import main\n"
            f"try: main(['predict', {str(scene)!r}, '-m', {str(checkpoint)!r}, '-o', {str(tmp_path / 'c.tif')!r}])\n"
            "except SystemExit as e: assert e.code in (0, None), e.code\n"
            "bad = [m for m in sys.modules if m == 'dask' or m.startswith(('dask.', 'distributed'))]\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "c.tif").is_file()


def test_a_dask_client_plans_and_writes_without_importing_torch(checkpoint, scene, tmp_path):
    """``rsseg predict --dask local:2``: the client reads the checkpoint's metadata and plans the
    row strips with torch unimportable; only the workers load the model."""
    code = ("from rsseg.cli.main import main\n"
            f"try: main(['predict', {str(scene)!r}, '-m', {str(checkpoint)!r}, '-o', {str(tmp_path / 'c.tif')!r}, "
            "'--device', 'cpu', '--dask', 'local:2'])\n"
            "except SystemExit as e: assert e.code in (0, None), e.code\n")
    proc = run_without_torch(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "c.tif").is_file()


def test_a_corrupt_input_on_dask_is_one_line_and_leaves_old_outputs(checkpoint, scene, tmp_path):
    """A raster whose header reads but whose later blocks are cut off fails on a worker (this
    checkpoint records no input range, so nothing samples it first): in strip mode (one input) and
    in scene mode (two inputs, two workers) the run prints one ``error:`` line and no traceback,
    exits 2, and the work folder is byte-identical."""
    rng = np.random.default_rng(3)
    with rasterio.open(tmp_path / "full.tif", "w", driver="GTiff", width=256, height=256, count=3, dtype="uint8",
                       tiled=True, blockxsize=64, blockysize=64) as dst:
        dst.write(rng.integers(0, 255, (3, 256, 256), dtype=np.uint8))
    data = (tmp_path / "full.tif").read_bytes()
    bad = tmp_path / "cut.tif"
    bad.write_bytes(data[: len(data) // 2])
    work = tmp_path / "work"
    work.mkdir()
    for name in ("out.tif", "out_scene.tif", "out_cut.tif"):  # strip mode's target, then both scenes'
        (work / name).write_bytes(b"old output")
    before = {p.name: p.read_bytes() for p in work.iterdir()}
    for inputs in ([bad], [scene, bad]):  # row strips, then one task per scene
        proc = subprocess.run([sys.executable, "-m", "rsseg.cli.main", "predict", *map(str, inputs), "-m", str(checkpoint),
                               "-o", str(work / "out.tif"), "--device", "cpu", "--dask", "local:2", "--overwrite"],
                              capture_output=True, text=True, timeout=600)
        out = proc.stdout + proc.stderr
        errors = [line for line in out.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2, out
        assert len(errors) == 1 and "cut.tif" in errors[0] and "truncated" in errors[0], out
        assert "Traceback" not in out and "distributed." not in out, out  # no worker or scheduler logs
        assert {p.name: p.read_bytes() for p in work.iterdir()} == before
