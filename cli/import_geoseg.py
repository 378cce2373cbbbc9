"""rsseg import."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from rsseg.cli.params import FiniteFloat

if TYPE_CHECKING:
    from rsseg.checkpoint import ModelMeta


def _names(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@click.command(context_settings={"show_default": True})
@click.argument("source", type=click.Path(dir_okay=False))
@click.option("-o", "--out", "out_path", required=True, type=click.Path(dir_okay=False), help="rsseg checkpoint to write (.ckpt).")
@click.option("--dataset", type=click.Choice(["loveda", "potsdam", "vaihingen", "uavid"]),
              help="Dataset the weights were trained on: sets classes, colours, band order and GSD.")
@click.option("--classes", help="Comma-separated class names, in the model's output order (overrides --dataset's).")
@click.option("--colors", help="Comma-separated '#rrggbb' colours, one per class.")
@click.option("--bands", help="Comma-separated band names in input order (default: the dataset's, else red,green,blue).")
@click.option("--gsd", type=FiniteFloat(min=0, min_open=True, max=1e5, example="0.05"), help="Ground sample distance of the training imagery in metres.")
@click.option("--encoder", help="timm name of the backbone (default: detected among resnet18/34/50/101).")
@click.option("--calibrate", "calibrate", type=click.Path(dir_okay=False), metavar="SCENE",
              help="Record the input contract measured on this raster (a sample of the imagery the weights were "
                   "trained on: data type, per-band p1/p99) instead of GeoSeg's 8-bit 0-255; with an rsseg "
                   "checkpoint as SOURCE, add the contract to a copy of it.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
def command(source, out_path, dataset, classes, colors, bands, gsd, encoder, calibrate, overwrite):
    """Import a GeoSeg UNetFormer checkpoint (github.com/WangLibo1995/GeoSeg) as an rsseg checkpoint.

    SOURCE is GeoSeg's Lightning .ckpt (model under 'net.'), a bare state dict or a .safetensors file.
    The output predicts, evaluates, exports and fine-tunes like a checkpoint written by `rsseg train`.
    SOURCE may also be an rsseg checkpoint without an input contract: --calibrate SCENE adds one.

    \b
    Examples:
      rsseg import unetformer-r18-loveda.ckpt --dataset loveda -o loveda.ckpt
      rsseg import weights.pth --classes background,building --colors '#000000,#ff0000' -o b.ckpt
      rsseg import old.ckpt --calibrate training_scene.tif -o old_with_contract.ckpt
    """
    from rsseg.checkpoint import is_rsseg_checkpoint
    from rsseg.errors import ConfigError
    from rsseg.geoseg_import import calibrate_checkpoint, import_geoseg
    from rsseg.io import check_output

    check_output(out_path, overwrite)
    if is_rsseg_checkpoint(source):
        given = [flag for flag, value in (("--dataset", dataset), ("--classes", classes), ("--colors", colors),
                                          ("--bands", bands), ("--gsd", gsd), ("--encoder", encoder)) if value is not None]
        if calibrate is None or given:
            raise ConfigError(f"{source} is already an rsseg checkpoint: `rsseg import` only adds its input contract, "
                              "measured with --calibrate SCENE (a raster like its training images)"
                              + (f"; {', '.join(given)} apply to GeoSeg weights" if given else ""))
        meta = calibrate_checkpoint(source, out_path, calibrate)
        click.echo(f"wrote {out_path}\n  {_contract(meta)}, measured on {calibrate}")
        return
    meta = import_geoseg(
        source, out_path, dataset=dataset, classes=_names(classes), colors=_names(colors), bands=_names(bands),
        gsd=gsd, encoder=encoder, calibrate=calibrate,
    )
    model = meta.config["model"]
    gsd_text = f", GSD {meta.gsd:g} m" if meta.gsd else ""
    click.echo(
        f"wrote {out_path}\n  UNetFormer ({model['encoder']}, window {model['window_size']}), "
        f"{meta.num_classes} classes: {', '.join(meta.classes)}\n  input: bands {','.join(meta.bands)}{gsd_text}, "
        f"ImageNet normalisation of raw/{meta.scale:g}\n  {_contract(meta)}"
        + (f", measured on {calibrate}" if calibrate else " (GeoSeg's 8-bit input)")
    )


def _contract(meta: ModelMeta) -> str:
    ranges = ", ".join(f"{lo:g}-{hi:g}" for lo, hi in meta.input_range or [])
    return f"input contract: {meta.input_dtype}, per-band range {ranges}"
