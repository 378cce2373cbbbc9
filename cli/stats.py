"""rsseg stats."""

from __future__ import annotations

import click

from rsseg.data.datasets import dataset_names


@click.command(context_settings={"show_default": True})
@click.option("--root", type=click.Path(), help="Dataset root directory (overrides dataset.root; required without a config that sets it).")
@click.option("--dataset", type=click.Choice(dataset_names()), help="Layout of the root (default: from --config, else folder).")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help="YAML config (class names, bands, ignore value).")
@click.option("--split", default="train", help="Split to describe.")
@click.option("-o", "--out", "out_path", type=click.Path(dir_okay=False), help="JSON output (default: print only).")
@click.option("--overwrite", is_flag=True, help="Replace an existing -o JSON.")
@click.option("--no-cache", is_flag=True, help="Recompute even if cached statistics exist.")
@click.argument("overrides", nargs=-1)
def command(root, dataset, config_path, split, out_path, overwrite, no_cache, overrides):
    """Per-class pixel and image-level (region) counts, imbalance factors (n_max/n_min as in the
    CeCo and RR papers) and per-band mean/std of a dataset root or a folder of images/ + masks/.

    \b
    Examples:
      rsseg stats --root sample_tiles
      rsseg stats --root data/LoveDA --dataset loveda -o loveda_stats.json
      rsseg stats -c scene.yaml --split val     (a geo config whose dataset.root is set)

    OVERRIDES are config keys as key=value, as in rsseg train.
    """
    from rich.console import Console
    from rich.table import Table

    from rsseg.cli.progress import progress_bar
    from rsseg.data.datasets import stats_for_path
    from rsseg.data.stats import unknown_colors_text
    from rsseg.errors import ConfigError, OutputPathError
    from rsseg.io import check_output, check_suffix, write_json
    from rsseg.runconfig import training_config

    cfg = training_config(config_path, dataset=dataset, root=root, overrides=list(overrides))
    path = cfg.dataset.root
    if path is None:
        raise ConfigError("no dataset root: pass --root DIR (or a --config that sets dataset.root)")
    if out_path:
        check_suffix(out_path, (".json",), "-o", "the statistics are JSON")
        check_output(out_path, overwrite)  # an existing or unwritable -o fails now, not after reading every file
    console = Console()
    with progress_bar("dataset statistics", "images", transient=True) as on_progress:
        stats = stats_for_path(path, cfg, split=split, use_cache=not no_cache, on_progress=on_progress)
    names = stats.classes or cfg.dataset.classes
    table = Table(title=f"{path} ({split}: {stats.num_images} images)")
    for col in ("class", "pixels", "pixel %", "images", "image %"):
        table.add_column(col, justify="left" if col == "class" else "right")
    total = max(1, sum(stats.pixel_counts))
    for name, px, reg in zip(names, stats.pixel_counts, stats.region_counts, strict=True):
        table.add_row(name, f"{px:,}", f"{100 * px / total:.2f}", f"{reg:,}", f"{100 * reg / max(1, stats.num_images):.1f}")
    console.print(table)

    def fmt(v):
        return "n/a (a class is absent)" if v is None else f"{v:.2f}"

    console.print(f"pixel imbalance n_max/n_min: {fmt(stats.pixel_imbalance)}   region imbalance: {fmt(stats.region_imbalance)}")
    if stats.unknown_color_pixels:
        console.print(f"[yellow]{stats.unknown_color_pixels:,} mask pixels have a colour that is no class's "
                      "(dataset.colors, exact match or within dataset.color_tolerance); they are ignored: "
                      f"{unknown_colors_text(stats, names, cfg.dataset.colors)}[/yellow]")
    if stats.ignored_share is not None:
        console.print(f"ignored: {100 * stats.ignored_share:.2f} % of the pixels with image data carry no label "
                      f"({stats.label_ignored_pixels:,} of {stats.data_pixels:,})")
    console.print("band mean: " + ", ".join(f"{m:.4f}" for m in stats.mean) + "   std: " + ", ".join(f"{s:.4f}" for s in stats.std) + "  (in [0,1] units)")
    if out_path:
        try:
            write_json(out_path, stats.to_dict())
        except OSError as exc:
            raise OutputPathError(f"cannot write {out_path}: {exc.strerror or exc}; {out_path} is unchanged") from None
        console.print(f"wrote {out_path}")
