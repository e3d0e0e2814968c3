"""Same scenario and seed: the same report, to the last digit; another seed: other draws."""

from __future__ import annotations

import json

from simulations.runner import run_scenario
from simulations.scenario import load_scenario
from tests.sim.conftest import SCENARIOS

EXAMPLE = SCENARIOS / "example_generic.yaml"


def fingerprint(seed: int) -> tuple[str, list[tuple[str, str, str, float]]]:
    outcome = run_scenario(load_scenario(EXAMPLE, {"seed": seed}), progress=False, write=False)
    report = {k: v for k, v in outcome.report.items() if k not in ("simulation",)}
    placements = [
        (j.id, j.placement.site if j.placement else "", j.state.value, j.finished_at or 0.0)
        for j in outcome.result.jobs
    ]
    return json.dumps(report, sort_keys=True, default=str), placements


def test_same_seed_same_report():
    a, pa = fingerprint(3)
    b, pb = fingerprint(3)
    assert a == b and pa == pb


def test_another_seed_draws_other_datasets_and_deadlines():
    w3 = load_scenario(EXAMPLE, {"seed": 3})
    w4 = load_scenario(EXAMPLE, {"seed": 4})
    from simulations.workload import build_workload

    a, b = build_workload(w3), build_workload(w4)
    assert [x.spec.datasets for x in a.arrivals] != [x.spec.datasets for x in b.arrivals]
    assert [x.spec.name for x in a.arrivals] == [x.spec.name for x in b.arrivals]  # same trace
