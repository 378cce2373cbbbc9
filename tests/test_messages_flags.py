"""Every ``--flag`` named in a string of the library, the CLI or the app (messages, help texts,
docstrings) is a real option of some ``rsseg`` command, so an error's advice can be followed."""

import ast
import re
from pathlib import Path

import click

from rsseg.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
FLAG = re.compile(r"(?<![\w/.-])--([a-z][a-zA-Z0-9]*(?:[.-][a-zA-Z0-9]+)*)")
#: options of other tools that rsseg passes or quotes on purpose: streamlit's ``--section.option``
#: settings (``rsseg app`` starts ``streamlit run`` with them)
OTHER_TOOLS = ("server.", "browser.", "client.")


def _options(command: click.Command, ctx: click.Context) -> set[str]:
    """Long options of ``command`` and, through the group's lazy loader, of all its subcommands."""
    names = {opt.lstrip("-") for param in command.get_params(ctx) for opt in (*param.opts, *param.secondary_opts)
             if opt.startswith("--")}
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            names |= _options(sub, click.Context(sub, parent=ctx, info_name=name))
    return names


def _named_flags() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for folder in ("rsseg", "cli", "app"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    for flag in FLAG.findall(node.value):
                        found.setdefault(flag, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_flag_in_a_message_exists() -> None:
    real = _options(main, click.Context(main, info_name="rsseg"))
    assert {"window-batch", "batch-size", "reference"} <= real  # the walk reaches the subcommands
    unknown = {flag: where for flag, where in _named_flags().items()
               if flag not in real and not flag.startswith(OTHER_TOOLS)}
    assert not unknown, f"texts name flags no rsseg command has: {unknown}"
