"""Column strips: a raster wider than the buffer budget streams strip by strip, with outputs
identical to the whole-row run and buffers bounded by the strip, not the raster width."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
from conftest import write_raster
from test_inference import OVERLAP, TILE, EntropyWriter, predictor, smooth_image

from rsseg.errors import RsSegError
from rsseg.inference import RowBlender, plan_windows, predict_file
from rsseg.inference.cog import BLOCK, RowWriter
from rsseg.inference.memory import block_cache, stream_columns
from rsseg.inference.windows import Span, WindowPlan, column_strips


@pytest.mark.parametrize("width,max_width", [(1100, 572), (5000, 1024), (513, 512), (100_000, 20_000), (900, 10)])
def test_column_strips_cover_the_width_in_aligned_even_strips(width, max_width):
    strips = column_strips(width, max_width, BLOCK)
    assert strips[0].start == 0 and strips[-1].stop == width
    assert all(s.stop == t.start for s, t in zip(strips, strips[1:]))  # contiguous, no gap or overlap
    assert all(s.start % BLOCK == 0 for s in strips)
    assert all(s.size <= max(max_width, BLOCK) for s in strips)
    assert len(strips) == -(-width // max(max_width // BLOCK * BLOCK, BLOCK))  # no more strips than needed
    assert column_strips(width, width, BLOCK) == [Span(0, width)]


def test_a_strip_blender_hands_out_exactly_the_whole_width_blend_of_its_columns():
    width, height, k = 1000, 300, 4
    grid = WindowPlan(width, height, TILE, OVERLAP)
    plan = grid.windows
    rng = np.random.default_rng(0)
    probs = {(w.col_off, w.row_off): rng.random((k, w.height, w.width), np.float32) for w in plan}
    whole = np.zeros((k, height, width), np.float16)

    def into(out):
        def on_band(y0, x0, p):
            out[:, y0:y0 + p.shape[1], x0:x0 + p.shape[2]] = p
        return on_band

    rb = RowBlender(k, grid, into(whole))
    for w in plan:
        rb.add(w, probs[w.col_off, w.row_off])
    strips = np.zeros_like(whole)
    for a, b in [(0, 333), (333, 512), (512, 1000)]:
        rb = RowBlender(k, grid, into(strips), columns=Span(a, b))
        assert rb.acc.shape[2] <= b - a + 2 * TILE  # the ring spans the strip's windows only
        for w in plan:
            if w.col_off < b and w.col_off + w.width > a:
                rb.add(w, probs[w.col_off, w.row_off])
        assert rb.complete
    assert np.array_equal(strips, whole)  # bit for bit: same windows, weights and order per pixel
    rb = RowBlender(k, grid, into(strips), columns=Span(0, 333))
    far = next(w for w in plan if w.col_off > 400)
    with pytest.raises(ValueError, match="does not overlap"):
        rb.add(far, probs[far.col_off, far.row_off])


def _wide_case(tmp_path):
    raw = smooth_image(150, 1100)
    raw[:, 40:70, 600:700] = 0  # a nodata hole across a strip border (512)
    raw[:, 40:70, 300:340] = 0
    src = write_raster(tmp_path / "in.tif", raw, nodata=0)
    return raw, src


def test_predict_in_column_strips_writes_what_whole_rows_write(tmp_path):
    raw, src = _wide_case(tmp_path)
    p = predictor(kernel=3)
    ref = p.predict_array(raw)
    ref[:, ::7] = (ref[:, ::7] + 1) % 3  # a reference that disagrees in places, for the scores
    write_raster(tmp_path / "ref.tif", ref[None], nodata=255)
    budget = 700 * (3 * TILE * 2 + (TILE + BLOCK) * 3) / 2**20  # 700 columns of ring + block cache
    with rasterio.open(src) as ds:
        assert stream_columns(ds, TILE, 3, budget) == [Span(0, 512), Span(512, 1024), Span(1024, 1100)]
        assert stream_columns(ds, TILE, 3, None) == stream_columns(ds, TILE, 3, 100) == [Span(0, 1100)]
    outs = {}
    for name, mb in (("rows", None), ("strips", budget)):
        d = tmp_path / name
        d.mkdir()
        res = predict_file(p, src, d / "cls.tif", confidence_path=d / "conf.tif", report_path=d / "rep.json",
                           reference_path=tmp_path / "ref.tif", products=[EntropyWriter(d / "ent.tif")], buffer_mb=mb)
        outs[name] = res
    for product in ("cls.tif", "conf.tif", "ent.tif"):
        with rasterio.open(tmp_path / "rows" / product) as a, rasterio.open(tmp_path / "strips" / product) as b:
            assert np.array_equal(a.read(1), b.read(1)), product
            assert (a.transform, a.crs, a.nodata) == (b.transform, b.crs, b.nodata)
    with rasterio.open(tmp_path / "strips" / "cls.tif") as ds:
        cls = ds.read(1)
    assert (cls[40:70, 600:700] == 255).all() and (cls[40:70, 300:340] == 255).all()
    assert (cls[:40] < 3).all()
    rows, strips = (json.loads((tmp_path / n / "rep.json").read_text()) for n in ("rows", "strips"))
    assert rows["metrics"] == strips["metrics"] and rows["metrics"]["OA"] < 1  # every pixel scored once
    assert [c["pixels"] for c in rows["classes"]] == [c["pixels"] for c in strips["classes"]]
    # the same areas, summed in another order
    assert [c["area_m2"] for c in strips["classes"]] == pytest.approx([c["area_m2"] for c in rows["classes"]], rel=1e-12)
    assert strips == json.loads(json.dumps(outs["strips"].report))


def test_strips_cost_only_the_windows_on_their_borders(tmp_path):
    _, src = _wide_case(tmp_path)
    p = predictor(kernel=1)
    counts = {}
    for name, mb in (("rows", None), ("strips", 1.5)):
        totals = []
        predict_file(p, src, tmp_path / f"{name}.tif", buffer_mb=mb, on_progress=lambda d, t, totals=totals: totals.append(t))
        counts[name] = totals[-1]
    rows_of_windows = len({w.row_off for w in plan_windows(1100, 150, TILE, OVERLAP)})
    # two borders, each straddled by at most two windows per row of windows
    assert counts["rows"] < counts["strips"] <= counts["rows"] + 2 * 2 * rows_of_windows


def test_a_budget_below_two_tiles_warns_and_a_non_positive_one_is_refused():
    src = SimpleNamespace(width=100_000, height=5000, count=3, dtypes=("uint8",) * 3)
    with pytest.warns(UserWarning, match="--buffer-mb 1 is below"):
        strips = stream_columns(src, 1024, 7, 1)
    assert all(s.size <= 2048 for s in strips) and max(s.size for s in strips) == 2048
    with pytest.raises(RsSegError, match="must be positive"):
        stream_columns(src, 1024, 7, 0)


def test_the_block_cache_follows_the_widest_strip():
    src = SimpleNamespace(width=100_000, height=5000, count=3, dtypes=("uint8",) * 3)
    per_column = (1024 + BLOCK) * 3
    assert block_cache(src, 1024).options["GDAL_CACHEMAX"] == per_column * 100_000
    strips = [Span(0, 16384), Span(16384, 32768), Span(32768, 100_000)]
    assert block_cache(src, 1024, strips).options["GDAL_CACHEMAX"] == per_column * (67232 + 2048)


def test_row_writer_takes_each_strip_top_to_bottom(tmp_path):
    profile = dict(driver="GTiff", width=1100, height=600, count=1, dtype="uint8", tiled=True, blockxsize=BLOCK,
                   blockysize=BLOCK)
    data = np.random.default_rng(0).integers(0, 250, (600, 1100), dtype=np.uint8)
    with rasterio.open(tmp_path / "out.tif", "w", **profile) as dst:
        writer = RowWriter(dst)
        for a, b in [(0, 512), (512, 1100)]:
            for y0 in range(0, 600, 100):
                writer.write(rasterio.windows.Window(a, y0, b - a, 100), data[y0:y0 + 100, a:b])
        with pytest.raises(ValueError, match="in order"):
            writer.write(rasterio.windows.Window(0, 0, 512, 100), data[:100, :512])
    with rasterio.open(tmp_path / "out.tif") as ds:
        assert np.array_equal(ds.read(1), data)
