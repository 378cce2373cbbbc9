"""The package's import graph: no cycle, and no module imports a higher layer.

Every module of the installed package (rsseg/, and cli/ + app/ installed as rsseg.cli / rsseg.app)
is parsed with ``ast``; module-level and function-level imports both count (``if TYPE_CHECKING:``
blocks do not: they never run). The layers are declared once, here and in docs/architecture.md,
by module prefix, so a new module falls into its package's layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: package name -> folder, as pyproject.toml installs them
PACKAGES = {"rsseg": ROOT / "rsseg", "rsseg.cli": ROOT / "cli", "rsseg.app": ROOT / "app"}

#: lowest first; a module may import its own layer and the ones below, never one above.
#: Each entry is a module prefix (``rsseg`` itself: the package ``__init__`` only); the longest
#: matching prefix decides a module's layer.
LAYERS: list[tuple[str, ...]] = [
    ("rsseg", "rsseg.errors", "rsseg.extras", "rsseg.constants", "rsseg.progress", "rsseg.registry", "rsseg.lazy", "rsseg.config"),
    ("rsseg.stac", "rsseg.http", "rsseg.io", "rsseg.data.normalize", "rsseg.data.augment", "rsseg.data.raster", "rsseg.data.splits"),
    ("rsseg.data",),
    ("rsseg.models", "rsseg.losses", "rsseg.metrics"),
    ("rsseg.runconfig",),
    ("rsseg.checkpoint",),
    ("rsseg.training", "rsseg.inference"),
    ("rsseg.geoseg_import", "rsseg.evaluation", "rsseg.demo"),
    ("rsseg.viewer",),
    ("rsseg.cli", "rsseg.app"),
]


def _modules() -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package ``__init__``)."""
    found = {}
    for prefix, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if prefix == "rsseg" and parts[0] in ("cli", "app"):
                continue
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            found[".".join([prefix, *parts])] = (path, is_package)
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported_names(tree: ast.Module, module: str, is_package: bool) -> list[str]:
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - (0 if is_package else 1)]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names.extend(f"{source}.{a.name}" for a in node.names)
            names.append(source)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names.append(node.args[0].value)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def import_graph() -> dict[str, set[str]]:
    """rsseg module -> the rsseg modules it imports (``from a import b``: ``a.b`` when that is a
    module, else ``a``)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        targets = set()
        for imported in _imported_names(ast.parse(path.read_text()), name, is_package):
            if imported != "rsseg" and not imported.startswith("rsseg."):
                continue
            while imported not in modules and "." in imported:
                imported = imported.rsplit(".", 1)[0]
            if imported in modules and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def layer(module: str) -> int:
    best, level = "", None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or (prefix != "rsseg" and module.startswith(prefix + "."))
            if matches and len(prefix) > len(best):
                best, level = prefix, i
    assert level is not None, f"{module} is in no layer of LAYERS: add its package there and in docs/architecture.md"
    return level


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_is_read():
    graph = import_graph()
    assert "rsseg.runconfig" in graph and "rsseg.data.datasets" in graph["rsseg.runconfig"]
    assert "rsseg.cli.train" in graph and "rsseg.app.streamlit_app" in graph


def test_no_import_cycle():
    cycle = _cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_module_imports_a_higher_layer():
    upward = [f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)})"
              for m, targets in sorted(import_graph().items()) for t in sorted(targets) if layer(t) > layer(m)]
    assert not upward, "\n".join(upward)


def test_config_is_a_leaf():
    leaf = {"rsseg", "rsseg.errors", "rsseg.constants"}
    assert import_graph()["rsseg.config"] <= leaf
