"""rsseg import."""

from __future__ import annotations

import click


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
@click.option("--gsd", type=float, help="Ground sample distance of the training imagery in metres.")
@click.option("--encoder", help="timm name of the backbone (default: detected among resnet18/34/50/101).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
def command(source, out_path, dataset, classes, colors, bands, gsd, encoder, overwrite):
    """Import a GeoSeg UNetFormer checkpoint (github.com/WangLibo1995/GeoSeg) as an rsseg checkpoint.

    SOURCE is GeoSeg's Lightning .ckpt (model under 'net.') or a bare state dict. The output
    predicts, evaluates, exports and fine-tunes like a checkpoint written by `rsseg train`.

    \b
    Examples:
      rsseg import unetformer-r18-loveda.ckpt --dataset loveda -o loveda.ckpt
      rsseg import weights.pth --classes background,building --colors '#000000,#ff0000' -o b.ckpt
    """
    from rsseg.geoseg_import import import_geoseg
    from rsseg.io import check_output

    check_output(out_path, overwrite)
    meta = import_geoseg(
        source, out_path, dataset=dataset, classes=_names(classes), colors=_names(colors), bands=_names(bands),
        gsd=gsd, encoder=encoder,
    )
    model = meta.config["model"]
    gsd_text = f", GSD {meta.gsd:g} m" if meta.gsd else ""
    click.echo(
        f"wrote {out_path}\n  UNetFormer ({model['encoder']}, window {model['window_size']}), "
        f"{meta.num_classes} classes: {', '.join(meta.classes)}\n  input: bands {','.join(meta.bands)}{gsd_text}, "
        f"ImageNet normalisation of raw/{meta.scale:g}"
    )
