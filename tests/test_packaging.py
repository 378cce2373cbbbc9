"""Packaging: a wheel carries the sample tiles, so ``rsseg demo`` works after a plain ``pip install``,
and the demo's locator finds them inside an installed (unpacked) copy."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

#: what a wheel is built from (a copy, so the build never writes build/ into the checkout)
SOURCES = ("pyproject.toml", "README.md", "rsseg", "cli", "app", "configs", "sample_tiles")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    # no build isolation: the build backend (setuptools) is already in the venv; tests stay offline
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                           str(src)], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (whl,) = out.glob("rsseg-*.whl")
    return whl


def test_wheel_ships_every_sample_tile(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"rsseg/sample_tiles/{p.relative_to(REPO / 'sample_tiles').as_posix()}"
                for p in (REPO / "sample_tiles").rglob("*") if p.is_file()}
    assert len(expected) > 60 and expected <= names, sorted(expected - names)[:5]
    assert "rsseg/sample_tiles/ATTRIBUTION.md" in names  # the licence travels with the data
    assert not any(n.startswith(("cli/", "sample_tiles/")) for n in names)  # no generic top-level names


def test_demo_finds_the_tiles_in_an_installed_copy(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "elsewhere"  # no ./sample_tiles here
    work.mkdir()
    code = "import rsseg.demo as d; print(d.__file__); print(d.find_sample_tiles())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=work, timeout=600,
                          env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    module, found = proc.stdout.split()[-2:]
    assert Path(module).is_relative_to(site)  # the unpacked wheel, not the checkout
    assert Path(found).resolve() == (site / "rsseg" / "sample_tiles").resolve()
