"""The ``rsseg`` command group.

Subcommands are imported lazily so ``rsseg --help`` answers without importing torch.
User mistakes (:class:`rsseg.errors.RsSegError`) are printed as one line; ``--verbose`` shows
the traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from rsseg import __version__
from rsseg.errors import RsSegError
from rsseg.extras import missing_extra

# name -> (module in rsseg.cli, one-line help shown by `rsseg --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "stats": ("stats", "Class frequencies, imbalance factors and band statistics of a dataset."),
    "train": ("train", "Train a UNetFormer on a dataset, with optional neural-collapse regularizers."),
    "evaluate": ("evaluate", "Per-class IoU/F1/OA reports for two rasters, a raster and polygons, or a checkpoint."),
    "predict": ("predict", "Segment rasters of any size into a class GeoTIFF (COG), polygons and reports."),
    "export": ("export", "Export a checkpoint to a self-describing .onnx model (and a STAC MLM item)."),
    "weights": ("weights", "Pretrained encoder weights by name (timm, TorchGeo): list, fetch, info."),
    "import": ("import_geoseg", "Import published GeoSeg UNetFormer weights as an rsseg checkpoint."),
    "app": ("app", "Open the map viewer (Streamlit) in the browser."),
    "demo": ("demo", "Train, predict and evaluate on the bundled sample tiles."),
}
#: key of the subcommand's name in the group context's ``meta``
_COMMAND = "rsseg.command"


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        ctx.meta[_COMMAND] = name  # named by a missing-extra error, which may come from this import
        module = importlib.import_module(f"rsseg.cli.{COMMANDS[name][0]}")
        return module.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, help_) in COMMANDS.items()])

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (RsSegError, ModuleNotFoundError) as exc:
            # a torch-free install: every command that reaches the train extra says so in one place
            error = exc if isinstance(exc, RsSegError) else missing_extra(f"rsseg {ctx.meta.get(_COMMAND, '')}", exc)
            if error is None or (ctx.obj and ctx.obj.get("verbose")):
                raise
            click.secho(f"error: {error}", fg="red", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.secho("interrupted", fg="yellow", err=True)
            sys.exit(130)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rsseg")
@click.option("-v", "--verbose", is_flag=True, help="Show debug logs and full tracebacks.")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """rsseg: land-cover and building maps from aerial and satellite rasters.

    \b
    Typical workflow:
      rsseg stats --root sample_tiles                # class balance, band statistics
      rsseg train --dataset folder --root sample_tiles --max-epochs 5
      rsseg predict big.tif -m runs/.../best.ckpt -o classes.tif --vector buildings.gpkg
      rsseg evaluate classes.tif reference.tif -o report/
      rsseg app                                      # map viewer
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        # Lightning's start-up banners and tips drown the progress bar; rsseg prints the device itself
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)


if __name__ == "__main__":
    main()
