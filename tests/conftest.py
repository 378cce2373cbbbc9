"""Shared fixtures: where the real sample data lives, skipping cleanly when it is absent."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLE_TILES = REPO / "sample_tiles"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real LoveDA/OAM/Landsat samples); skips when the checkout has none."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent (it exists for developers and CI, not in a user's clone)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_tiles() -> Path:
    return SAMPLE_TILES
