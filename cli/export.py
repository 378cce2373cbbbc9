"""rsseg export."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(context_settings={"show_default": True})
@click.option("-m", "--model", "checkpoint", required=True, type=click.Path(dir_okay=False), help="Checkpoint written by rsseg train or rsseg import.")
@click.option("-o", "--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Output .onnx file.")
@click.option("--size", default=512, help="Example input size used for tracing (height and width stay dynamic).")
@click.option("--stac", "stac_path", type=click.Path(dir_okay=False), help="Also write a STAC item (JSON) describing the model with the STAC MLM extension, its asset the .onnx file.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
def command(checkpoint, out_path, size, stac_path, overwrite):
    """Export a checkpoint to one self-describing ONNX model file (logits only, dynamic batch and size).

    The file carries everything predict needs in its metadata_props: under "rsseg" (JSON) the
    classes, colours, bands, normalisation, input contract, pixel size, inference defaults, the
    checkpoint's sha256 and the rsseg version; under "mlm" the same as STAC MLM extension fields.
    rsseg predict, evaluate -m and the viewer take the file in place of the checkpoint, and need no
    PyTorch to run it.

    \b
    Example:
      rsseg export -m best.ckpt -o buildings.onnx --stac buildings.json
      rsseg predict scene.tif -m buildings.onnx -o classes.tif
    """
    from rich.console import Console

    from rsseg.checkpoint import ONNX_SUFFIX, export_checkpoint_onnx
    from rsseg.errors import ConfigError
    from rsseg.io import check_output, check_suffix

    check_output(out_path, overwrite)
    check_suffix(out_path, (ONNX_SUFFIX,), "-o", "an exported model is a .onnx file (predict and the viewer recognise "
                 "it by that extension)")
    if stac_path is not None:
        if Path(stac_path).resolve() == Path(out_path).resolve():
            raise ConfigError(f"--stac {stac_path} is the model file itself; name a .json file beside it")
        check_output(stac_path, overwrite)
    with Console(stderr=True).status(f"exporting {checkpoint} to ONNX (tracing with dynamic sizes takes a minute or two on a CPU)"):
        path, meta = export_checkpoint_onnx(checkpoint, out_path, size, stac=stac_path)
    click.echo(
        f"wrote {path}\n  input: float32 [N,{meta.in_channels},H,W], bands {','.join(meta.bands)}, "
        f"normalised as (raw/{meta.scale:g} - mean)/std\n  mean {[round(m, 4) for m in meta.mean]}, "
        f"std {[round(s, 4) for s in meta.std]}\n  output: logits [N,{meta.num_classes},H,W], classes {','.join(meta.classes)}\n"
        f"  metadata: rsseg (everything predict needs) and STAC MLM fields; checkpoint sha256 {meta.checkpoint_sha256}"
        + (f"\nwrote {stac_path} (STAC item, MLM extension)" if stac_path is not None else "")
        + f"\npredict with: rsseg predict SCENE.tif -m {path} -o classes.tif"
    )
