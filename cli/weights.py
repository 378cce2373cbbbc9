"""rsseg weights: pretrained encoder weights by name (timm, TorchGeo) and what a weights file holds."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def command() -> None:
    """Pretrained encoder weights by name, for model.weights.

    \b
    Names:
      timm:<tag>                 e.g. timm:resnet18.a1_in1k (ImageNet, RGB)
      torchgeo:<Enum>.<MEMBER>   e.g. torchgeo:ResNet18_Weights.SENTINEL2_ALL_MOCO (13 Sentinel-2 bands)
      FILE                       a local .pth/.pt/.safetensors state dict

    \b
    Examples:
      rsseg weights list --encoder resnet18 --bands 13
      rsseg weights fetch torchgeo:ResNet18_Weights.SENTINEL2_RGB_MOCO -o weights/
      rsseg train --dataset folder model.weights=torchgeo:ResNet18_Weights.SENTINEL2_RGB_MOCO
    """


@command.command("list")
@click.option("--encoder", help="timm encoder name (model.encoder), e.g. resnet18; default: any.")
@click.option("--bands", type=int, help="Input band count of the dataset; default: any.")
def list_command(encoder: str | None, bands: int | None) -> None:
    """Weights names that fit an encoder and band count, with bands, licence and source."""
    from rsseg.models.weights import list_weights

    found = list_weights(encoder, bands)
    if not found:
        click.echo(f"no pretrained weights for encoder {encoder or 'any'} with {bands or 'any'} bands")
        return
    for info in found:
        band_text = ",".join(info.bands) if info.bands else f"{info.in_chans} bands"
        click.echo(f"{info.name}\t{info.model}\t{band_text}\tlicence: {info.license or 'see source'}\t{info.origin or ''}")


@command.command("fetch")
@click.argument("name")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), help="Also write the state dict here "
              "(<name>.pth) for an offline machine; use it as model.weights=FILE.")
def fetch_command(name: str, out_dir: str | None) -> None:
    """Download NAME once into the library's cache (torch.hub for TorchGeo, Hugging Face for timm)."""
    from rsseg.models.weights import fetch

    path = fetch(name, Path(out_dir) if out_dir else None)
    click.echo(f"cached {name}" + (f"; wrote {path} (use model.weights={path})" if path else ""))


@command.command("info")
@click.argument("path", type=click.Path(dir_okay=False))
def info_command(path: str) -> None:
    """What a weights file or rsseg checkpoint holds: tensors, parameters, input bands, metadata."""
    from rsseg.checkpoint import file_summary

    for key, value in file_summary(Path(path)).items():
        click.echo(f"{key}: {value}")
