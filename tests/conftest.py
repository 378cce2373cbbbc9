"""Shared fixtures and helpers: where the real sample data lives (skipping cleanly when it is
absent), and one way to write a small test raster (:func:`write_raster`, importable as
``from conftest import write_raster``), and the input contract of 8-bit test models
(:func:`uint8_contract`), and a small ONNX model shaped like an export (:func:`write_onnx_model`),
and a Python script run where ``import torch`` fails (:func:`run_without_torch`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLE_TILES = REPO / "sample_tiles"

# the CLI and viewer default to `--engine auto` (ONNX Runtime on the CPU, exported once per checkpoint):
# tests that do not ask for an engine run PyTorch, so no test pays a minute of export unasked
os.environ.setdefault("RSSEG_ENGINE", "torch")

#: put before a script by :func:`run_without_torch`
_NO_TORCH = "import sys; sys.modules['torch'] = None\n"


def run_without_torch(code: str, *args: object, timeout: float = 300,
                      env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python in which ``import torch`` fails (as in a torch-free install),
    ``args`` as its ``sys.argv[1:]``; output captured as text."""
    return subprocess.run([sys.executable, "-c", _NO_TORCH + code, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


#: 2 m pixels in UTM 33N: a valid georeferenced grid for synthetic rasters
UTM_TRANSFORM = Affine(2.0, 0, 500000, 0, -2.0, 100000)


def write_raster(path: Path, data: np.ndarray, crs: str | None = "EPSG:32633", transform: Affine | None = None,
                 nodata: float | None = None) -> Path:
    """Write ``data`` (``[C, H, W]``, or ``[H, W]`` for one band) as a GeoTIFF at ``path``, creating
    its folder. ``transform`` defaults to :data:`UTM_TRANSFORM` when ``crs`` is set; ``crs=None``
    without a transform writes no georeferencing at all (like a PNG tile)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = data if data.ndim == 3 else data[None]
    profile = dict(driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0], dtype=arr.dtype,
                   nodata=nodata)
    if crs:
        profile["crs"] = crs
    if transform is not None or crs:
        profile["transform"] = transform if transform is not None else UTM_TRANSFORM
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr)
    return path


def uint8_contract(bands: int = 3) -> dict:
    """``input_dtype`` / ``input_range`` of a model trained on 8-bit imagery: what a test checkpoint
    records so that predict, evaluate and the viewer accept it (a model without one is refused)."""
    return {"input_dtype": "uint8", "input_range": [[0.0, 255.0] for _ in range(bands)]}


def tif_bytes(tmp: Path, data: np.ndarray) -> bytes:
    """The bytes of a GeoTIFF holding ``data`` without georeferencing (e.g. a zip archive member)."""
    p = write_raster(tmp / "member.tif", data, crs=None)
    out = p.read_bytes()
    p.unlink()
    return out


def make_folder(root: Path, n: int = 4, size: int = 64) -> Path:
    """``root/images`` + ``root/masks``: ``n`` RGB uint8 tiles with 2-class masks."""
    rng = np.random.default_rng(0)
    for i in range(n):
        write_raster(root / "images" / f"t{i}.tif", rng.integers(0, 255, (3, size, size), dtype=np.uint8))
        write_raster(root / "masks" / f"t{i}.tif", rng.integers(0, 2, (size, size), dtype=np.uint8))
    return root


def write_onnx_model(path: Path, props: dict | None = None, bands: int = 3, classes: int = 2, seed: int = 0) -> Path:
    """A small ONNX model shaped like an rsseg export (input ``image`` [N, bands, H, W], output
    ``logits`` [N, classes, H, W]: one 1x1 convolution, so a test needs no minute-long UNetFormer
    export), with ``props`` written as JSON into ``metadata_props`` (e.g. ``{"rsseg": meta.to_dict()}``)."""
    import json

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = [numpy_helper.from_array(rng.normal(size=(classes, bands, 1, 1)).astype(np.float32), "w"),
               numpy_helper.from_array(rng.normal(size=classes).astype(np.float32), "b")]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w", "b"], ["logits"])], "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", bands, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes, "H", "W"])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every ONNX Runtime of the supported range loads
    helper.set_model_props(model, {k: json.dumps(v) for k, v in (props or {}).items()})
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real LoveDA/OAM/Landsat samples); skips when the checkout has none."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent (it exists for developers and CI, not in a user's clone)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_tiles() -> Path:
    return SAMPLE_TILES
