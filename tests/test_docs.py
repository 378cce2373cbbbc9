"""User docs: every relative link resolves, and nothing in them speaks about how the work was organised."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
USER_DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: words a user cannot act on: internal tracker numbers and work-log vocabulary
INTERNAL = re.compile(r"\b(issue|stop|round|ticket) #?\d+\b|\bthis round\b|\bother agents?\b", re.IGNORECASE)
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(doc: Path) -> None:
    missing = []
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        path = target.split("#", 1)[0]
        if not path or re.match(r"[a-z]+:", path):
            continue
        if not (doc.parent / path).exists():
            missing.append(target)
    assert not missing, f"{doc.name} links to missing files: {missing}"


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: p.name)
def test_no_internal_wording(doc: Path) -> None:
    hits = [m.group(0) for m in INTERNAL.finditer(doc.read_text(encoding="utf-8"))]
    assert not hits, f"{doc.name} speaks about internal work items: {hits}"


def test_docs_index_lists_every_page() -> None:
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    pages = {p.name for p in (ROOT / "docs").glob("*.md")} - {"index.md"}
    unlisted = sorted(p for p in pages if f"({p})" not in index)
    assert not unlisted, f"docs/index.md does not list {unlisted}"


def test_license_matches_the_package_metadata() -> None:
    assert "MIT License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert 'license = { text = "MIT" }' in (ROOT / "pyproject.toml").read_text(encoding="utf-8")
