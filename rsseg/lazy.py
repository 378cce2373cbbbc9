"""Package namespaces that import their names on first use (PEP 562).

A package whose modules pull in heavy libraries (torch, Lightning) re-exports their names this way, so
importing one light module of it (e.g. scoring a raster with numpy) does not load the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps a name to the module defining it;
    any other attribute is tried as a submodule (``package.name``)."""
    names = sorted(exports)

    def getattr_(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        try:  # a submodule, e.g. ``rsseg.data.stats`` after a bare ``import rsseg.data``
            return importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None

    def dir_() -> list[str]:
        return names

    return getattr_, dir_
