"""Sweeps on a real (private, local) Ray: the same reports as replaying one by one."""

from __future__ import annotations

import json

import pytest

from simulations.runner import run_scenario
from simulations.scenario import load_scenario
from simulations.sweep import run_on_ray
from tests.sim.conftest import SCENARIOS

EXAMPLE = str(SCENARIOS / "example_generic.yaml")


@pytest.mark.ray
@pytest.mark.slow
def test_sweep_on_local_ray_matches_sequential_replays(tmp_path):
    grid = [
        ("greedy", EXAMPLE, {"scheduler.placer": "greedy", "trace.limit": 30}),
        ("blind", EXAMPLE, {"scheduler.placer": "egress-blind", "trace.limit": 30}),
    ]
    reports = run_on_ray(grid, workers=2, out=tmp_path)
    for (label, path, over), got in zip(grid, reports, strict=True):
        want = run_scenario(load_scenario(path, over), progress=False, write=False).report
        for key in ("jobs", "cost", "burst", "deadlines", "jct_s", "wait_s"):
            assert json.dumps(got[key], sort_keys=True) == json.dumps(want[key], sort_keys=True), (label, key)
        assert (tmp_path / label / "report.json").exists()
