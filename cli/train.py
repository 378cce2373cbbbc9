"""rsseg train."""

from __future__ import annotations

import datetime as dt
import sys

import click

from rsseg.data.datasets import dataset_names
from rsseg.losses.regularizers import regularizer_names


@click.command(context_settings={"show_default": True})
@click.option("--dataset", type=click.Choice(dataset_names()), help="Dataset adapter (default: from --config, else folder).")
@click.option("--root", type=click.Path(file_okay=False), help="Dataset root directory (overrides dataset.root).")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help="YAML config (default: bundled configs/<dataset>/ce.yaml).")
@click.option(
    "-r", "--regularizer", "regularizers", multiple=True,
    type=click.Choice([*regularizer_names(), "none"]),
    help="Neural-collapse regularizer(s) to enable; repeat to combine (e.g. -r in2nect -r rr). 'none' disables all. "
         "Default: the dataset's bundled config (today the CE + Dice baseline, no regularizer, for every dataset).",
)
@click.option("--max-epochs", type=int, help="Epochs (overrides optim.max_epochs).")
@click.option("--batch-size", type=int, help="Training chips per optimizer step, per device (overrides optim.batch_size). "
                                            "Not predict's --window-batch (windows per forward pass).")
@click.option("--devices", default="auto", help="How many devices per node (a count, as Lightning's devices): GPUs, or CPU processes (gloo) "
                                                "without a GPU; 'auto' = all GPUs, else one CPU process. "
                                                "Not predict's --device, which says where inference runs.")
@click.option("--num-nodes", type=int, default=1, help="Nodes for multi-node DDP (launch one process per node, e.g. with srun or torchrun).")
@click.option("--precision", default="auto", help="'auto' (bf16-mixed on GPU, 32-true on CPU) or any Lightning precision.")
@click.option("--resume", type=click.Path(dir_okay=False), help="Continue from a run's last.ckpt (epoch, optimizer and schedule state; best.ckpt keeps the weights only).")
@click.option("--init-from", type=click.Path(dir_okay=False), help="Start from this checkpoint's weights (e.g. from `rsseg import`); fresh optimizer and schedule.")
@click.option("--seed", type=int, help="Random seed (overrides optim.seed).")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), help="Run directory (default: runs/<dataset>-<methods>-<time>).")
@click.option("--overwrite", is_flag=True, help="Train into a run directory that already holds checkpoints (--resume continues one without it).")
@click.option("--print-config", is_flag=True, help="Print the fully resolved config (YAML, as written to config.yaml) and exit without training.")
@click.option("--allow-ignored", is_flag=True, help="Train even when the labels leave a class without pixels beside mask colours that are no class's, or leave most pixels unlabelled (refused otherwise).")
@click.argument("overrides", nargs=-1)
def command(dataset, root, config_path, regularizers, max_epochs, batch_size, devices, num_nodes, precision, resume, init_from, seed, out_dir,
            overwrite, print_config, allow_ignored, overrides):
    """Train a UNetFormer; writes best.ckpt (by val mIoU, weights only), last.ckpt (to resume), config.yaml and CSV logs.

    OVERRIDES are config keys as key=value, e.g. optim.lr=1e-3 loss.regularizers.in2nect.weight=0.3

    \b
    Examples:
      rsseg train --dataset folder --root sample_tiles --max-epochs 5
      rsseg train --dataset loveda --root data/LoveDA -r in2nect
      rsseg train -c configs/potsdam/ceco.yaml --devices 2
      rsseg train --dataset loveda --root data/LoveDA --print-config > loveda.yaml
    """
    from rsseg.config import config_to_yaml
    from rsseg.runconfig import training_config
    from rsseg.training import train

    flags = [f"optim.{k}={v}" for k, v in (("max_epochs", max_epochs), ("batch_size", batch_size), ("seed", seed)) if v is not None]
    cfg = training_config(config_path, dataset=dataset, root=root, regularizers=list(regularizers), overrides=flags + list(overrides))
    if print_config:
        click.echo(config_to_yaml(cfg), nl=False)
        return
    if out_dir is None:
        methods = "+".join(cfg.loss.regularizers.enabled()) or "ce"
        out_dir = f"runs/{cfg.dataset.name}-{methods}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    devices = int(devices) if str(devices).isdigit() else devices
    result = train(cfg, out_dir, devices=devices, num_nodes=num_nodes, precision=precision, resume=resume, init_from=init_from,
                   overwrite=overwrite, allow_ignored=allow_ignored, on_labels=lambda text: click.echo(f"labels: {text}"))
    if result.interrupted:
        kept = f"resume with --resume {result.last}" if result.last else "no epoch had completed, nothing was kept"
        click.secho(f"training interrupted; {kept}", fg="yellow", err=True)
        sys.exit(130)  # the shell's code for Ctrl-C: scripts must not take an interrupted run for a finished one
    click.echo(f"run directory: {result.run_dir}")
    if result.best:
        click.echo(f"best checkpoint: {result.best} (val mIoU {100 * result.best_miou:.2f})")
    if result.last:
        click.echo(f"last checkpoint: {result.last}")
