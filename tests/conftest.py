"""Shared fixtures: the real data folder beside the checkout, and small real images."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LOOKALIKE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _require(path: Path) -> Path:
    if not path.exists():
        if os.environ.get("CI"):
            # In CI the data is always laid beside the checkout: absence is a failure.
            pytest.fail(f"shared data missing in CI: {path}")
        pytest.skip(f"real data folder not present: {path} (lay ../shared/data beside the checkout)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; skips the test (fails in CI) when it is absent."""
    return _require(SHARED_DATA)


@pytest.fixture(scope="session")
def coil_dir(shared_data) -> Path:
    return _require(shared_data / "coil100" / "images")


@pytest.fixture(scope="session")
def ukbench_dir(shared_data) -> Path:
    return _require(shared_data / "fixtures" / "neardup_ukbench")


@pytest.fixture(scope="session")
def lfw_dir(shared_data) -> Path:
    return _require(shared_data / "lfw")


@pytest.fixture(scope="session")
def lfw_trio(lfw_dir) -> tuple[Path, Path, Path]:
    """Two photos of one LFW person and one of another person (the face tests' trio)."""
    return tuple(lfw_dir / "images" / name / f"{name}_{i:04d}.jpg"
                 for name, i in (("Aaron_Peirsol", 1), ("Aaron_Peirsol", 2), ("Colin_Powell", 1)))
