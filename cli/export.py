"""rsseg export."""

from __future__ import annotations

import click


@click.command(context_settings={"show_default": True})
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("-o", "--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Output .onnx file.")
@click.option("--size", default=512, help="Example input size used for tracing (height and width stay dynamic).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
def command(checkpoint, out_path, size, overwrite):
    """Export a checkpoint's inference graph (logits only, dynamic batch and size) to ONNX."""
    from rsseg.checkpoint import load_model
    from rsseg.io import check_output
    from rsseg.models import export_onnx

    check_output(out_path, overwrite)
    model, meta = load_model(checkpoint)
    path = export_onnx(model, out_path, in_channels=meta.in_channels, height=size, width=size)
    click.echo(f"wrote {path} (input: float32 [N,{meta.in_channels},H,W] normalised as (raw/{meta.scale:g} - mean)/std; "
               f"bands {','.join(meta.bands)}; classes {','.join(meta.classes)})")
