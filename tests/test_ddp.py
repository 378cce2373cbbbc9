"""DDP on CPU (gloo): global class means across ranks, and 2-process training of every kind of
config without unused parameters (the baseline crashed this way when the regularizers read a
side projection)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rsseg.losses import class_means
from rsseg.metrics.collapse import CollapseStats

K, D = 4, 3


def _global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(4, D, 6, 6, generator=g, dtype=torch.float64)
    labels = torch.randint(0, K, (4, 6, 6), generator=g)
    labels[0] = 255  # rank 0's first image holds no valid pixel
    labels[2:, :, :3] = 3  # class 3 mostly on rank 1
    return emb, labels


def _rank_main(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        emb, labels = _global_batch()
        half = slice(2 * rank, 2 * rank + 2)
        local = emb[half].clone().requires_grad_(True)
        means, counts = class_means(local, labels[half], K, sync=True)
        # the gradient of a loss on the global means reaches each rank's own pixels
        (means * torch.arange(1.0, D + 1, dtype=means.dtype)).sum().backward()
        stats = CollapseStats(K, D)
        stats.update(emb[half], labels[half])
        stats.all_reduce()
        torch.save(
            {"means": means.detach(), "counts": counts, "grad": local.grad, "diag": stats.compute()},
            Path(out) / f"rank{rank}.pt",
        )
        # gloo aborts a rank whose peer closes its socket mid-transfer: leave together
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_give_the_global_class_means(tmp_path):
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.start_processes(_rank_main, args=(2, init, str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    emb, labels = _global_batch()
    full = emb.clone().requires_grad_(True)
    means, counts = class_means(full, labels, K)
    (means * torch.arange(1.0, D + 1, dtype=means.dtype)).sum().backward()
    stats = CollapseStats(K, D)
    stats.update(emb, labels)
    single = stats.compute()
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        torch.testing.assert_close(got["means"], means.detach())
        assert torch.equal(got["counts"], counts)
        # each rank's loss on the global means sends its gradient to every rank's pixels (the
        # all-reduce's backward sums them); DDP's averaging over 2 ranks then gives the 1-process one
        torch.testing.assert_close(got["grad"] / 2, full.grad[2 * rank : 2 * rank + 2])
        assert got["diag"] == pytest.approx(single)


@pytest.mark.slow
@pytest.mark.timeout(2400)
@pytest.mark.parametrize("regularizer", ["none", "in2nect"])
def test_two_process_cpu_ddp_training_finishes(regularizer, sample_tiles, tmp_path):
    """`rsseg train --devices 2` on CPU: Lightning DDP over gloo, 2 epochs, tiny crops."""
    rsseg = Path(sys.executable).with_name("rsseg")
    out = tmp_path / "run"
    cmd = [
        str(rsseg), "train", "--dataset", "folder", "--root", str(sample_tiles), "-r", regularizer,
        "--devices", "2", "--max-epochs", "2", "--batch-size", "16", "-o", str(out),
        "optim.crop_size=64", "optim.scales=[0.5]", "model.encoder=resnet18",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (out / "last.ckpt").is_file() and (out / "best.ckpt").is_file()
    ck = torch.load(out / "last.ckpt", map_location="cpu", weights_only=True)
    assert ck["epoch"] == 1
