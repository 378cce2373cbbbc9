"""The one-screen summary that ``rsseg predict`` prints at the end, from what the library returns.

The library (:func:`rsseg.inference.predict_file`) prints nothing; it returns a
:class:`~rsseg.inference.pipeline.PredictResult` whose ``products`` and ``report`` this renders.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rsseg.inference.pipeline import PredictResult

_AREA_UNITS = ((1e6, "km²"), (1e4, "ha"), (1.0, "m²"))


def human_size(n_bytes: int) -> str:
    """``1536`` -> ``'1.5 KB'`` (powers of 1024, as file managers show them)."""
    if n_bytes < 1024:
        return f"{n_bytes} B"
    size = n_bytes / 1024
    for unit in ("KB", "MB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def area_unit(total_m2: float) -> tuple[float, str]:
    """The unit that keeps the total readable: km² from 1 km², ha from 1 ha, else m²."""
    return next((div, name) for div, name in _AREA_UNITS if total_m2 >= div or div == 1.0)


def class_areas(results: Sequence[PredictResult]) -> list[tuple[str, float, int]]:
    """Per class (name, area m², pixels), summed over every input's area report."""
    totals: dict[str, list[float]] = {}
    for result in results:
        for row in result.report.get("classes", []):
            entry = totals.setdefault(row["class_name"], [0.0, 0])
            entry[0] += row["area_m2"]
            entry[1] += row["pixels"]
    return [(name, area, int(px)) for name, (area, px) in totals.items()]


def print_summary(results: Sequence[PredictResult], seconds: float, console: Console | None = None) -> None:
    """Outputs written (with sizes), per-class areas over all inputs, and the time taken."""
    console = console or Console()
    console.print("outputs", style="bold")
    for result in results:
        main = list(dict.fromkeys(Path(p) for p in (result.output_path, *result.products.values())))
        for path in main:
            size = human_size(path.stat().st_size) if path.is_file() else "-"
            # plain, unwrapped lines: long paths stay whole (copyable) and '[' is not rich markup
            console.print(f"  {path}  {size}", markup=False, highlight=False, soft_wrap=True)
        # GIS sidecars and shapefile parts: one line, so they are known to belong with the outputs
        others = [Path(p) for p in result.files if Path(p) not in main and Path(p).is_file()]
        if others:
            size = human_size(sum(p.stat().st_size for p in others))
            console.print(f"  + {', '.join(p.name for p in others)}  {size}", markup=False, highlight=False,
                          soft_wrap=True)

    rows = class_areas(results)
    total = sum(area for _, area, _ in rows)
    div, unit = area_unit(total)
    areas = Table(title=f"class areas ({len(results)} input{'s' if len(results) != 1 else ''})", title_justify="left")
    areas.add_column("class")
    areas.add_column(f"area ({unit})", justify="right")
    areas.add_column("%", justify="right")
    areas.add_column("pixels", justify="right")
    for name, area, pixels in rows:
        areas.add_row(name, f"{area / div:,.2f}", f"{100 * area / total:.1f}" if total else "0.0", f"{pixels:,}")
    areas.add_row("total", f"{total / div:,.2f}", "100.0" if total else "0.0",
                  f"{sum(px for *_, px in rows):,}", style="bold")
    console.print(areas)
    console.print(f"time: {seconds:.1f} s")
