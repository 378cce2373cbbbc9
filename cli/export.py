"""rsseg export."""

from __future__ import annotations

import click


@click.command(context_settings={"show_default": True})
@click.option("-m", "--model", "checkpoint", required=True, type=click.Path(dir_okay=False), help="Checkpoint written by rsseg train or rsseg import.")
@click.option("-o", "--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Output .onnx file.")
@click.option("--size", default=512, help="Example input size used for tracing (height and width stay dynamic).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
def command(checkpoint, out_path, size, overwrite):
    """Export a checkpoint's inference graph (logits only, dynamic batch and size) to ONNX.

    The model's metadata (bands, mean/std, classes, colours) is stored in the ONNX file's
    metadata_props under the key "rsseg" (JSON).

    \b
    Example:
      rsseg export -m best.ckpt -o best.onnx
    """
    from rich.console import Console

    from rsseg.checkpoint import export_checkpoint_onnx
    from rsseg.io import check_output

    check_output(out_path, overwrite)
    with Console(stderr=True).status(f"exporting {checkpoint} to ONNX (tracing with dynamic sizes takes a minute or two on a CPU)"):
        path, meta = export_checkpoint_onnx(checkpoint, out_path, size)
    click.echo(
        f"wrote {path}\n  input: float32 [N,{meta.in_channels},H,W], bands {','.join(meta.bands)}, "
        f"normalised as (raw/{meta.scale:g} - mean)/std\n  mean {[round(m, 4) for m in meta.mean]}, "
        f"std {[round(s, 4) for s in meta.std]}\n  output: logits [N,{meta.num_classes},H,W], classes {','.join(meta.classes)}"
    )
