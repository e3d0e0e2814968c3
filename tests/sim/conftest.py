"""Simulator tests: trace excerpts in tests/sim/data; full traces at GRAVITY_TRACES."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
SCENARIOS = ROOT / "simulations" / "scenarios"


def traces_dir() -> Path:
    return Path(os.environ.get("GRAVITY_TRACES") or ROOT.parent / "shared" / "traces").resolve()


@pytest.fixture(scope="session")
def traces() -> Path:
    """The real traces; a test that needs them fails (never skips) when they are not there."""
    path = traces_dir()
    if not (path / "philly" / "philly_jobs_pollux.csv").exists():
        pytest.fail(f"real traces not found at {path} (set GRAVITY_TRACES)")
    return path
