"""Each what-if knob moves the replay the way it should (the example scenario, a few seconds each)."""

from __future__ import annotations

import pytest

from simulations.runner import run_scenario
from simulations.scenario import load_scenario
from tests.sim.conftest import SCENARIOS

EXAMPLE = SCENARIOS / "example_generic.yaml"


def replay(what_if=(), **overrides):
    scenario = load_scenario(EXAMPLE, {"what_if": list(what_if), "report.plots": False, **overrides})
    return run_scenario(scenario, progress=False, write=False)


@pytest.fixture(scope="module")
def base():
    return replay()


def test_adding_gpus_on_prem_cuts_the_burst(base):
    more = replay([{"add_gpus": {"site": "dc", "gpu_model": "A100-80GB", "gpus": 64}}])
    assert more.workload.catalog.total_gpus("dc") == base.workload.catalog.total_gpus("dc") + 64
    assert more.report["burst"]["share_of_gpu_hours"] < base.report["burst"]["share_of_gpu_hours"]
    assert more.report["cost"]["onprem_idle_usd"] > base.report["cost"]["onprem_idle_usd"]  # paid when idle


def test_dearer_clouds_cost_more_per_gpu_hour(base):
    dear = replay([{"scale_price": {"sites": "aws-*", "factor": 3.0}}])
    pools = {p.key: p for p in dear.workload.catalog.pools}
    assert pools["aws-us-east-1/p5"].usd_per_gpu_hour == pytest.approx(3 * 6.88)
    aws_before = sum(r.gpus * r.held_s for r in base.rows if r.site.startswith("aws-"))
    aws_after = sum(r.gpus * r.held_s for r in dear.rows if r.site.startswith("aws-"))
    assert aws_after < aws_before  # work moves away from the dearer provider


def test_egress_tariff_changes_the_bill_of_moved_data(base):
    # dc's uplink is free in the scenario, so data copied out of dc costs storage but no egress
    assert base.report["cost"]["egress_usd"] == 0 and base.report["cost"]["storage_usd"] > 0
    tariff = replay([{"egress": {"sites": "dc", "internet_usd_per_gb": 0.05}}])
    moves = [m for j in tariff.result.jobs if j.placement for m in j.placement.data_moves if m.from_site == "dc"]
    egress = tariff.report["cost"]["egress_usd"]
    assert moves and egress == pytest.approx(sum(m.egress_usd for m in moves))  # each job's share, summed
    # one copy per (dataset, site) is paid however many jobs read it: at most 5 cents per GB moved
    assert 0 < egress <= 0.05 * sum(m.size_gb for m in moves) + 1e-9


def test_forbidding_a_region_keeps_every_job_out_of_it():
    out = replay([{"forbid": {"region": "us-west"}}])
    west = {s.name for s in out.workload.catalog.sites if s.region == "us-west"}
    assert west and not any(r.site in west for r in out.rows)


def test_a_residency_rule_pins_data_to_its_jurisdiction():
    out = replay([{"residency": {"classification": "public", "jurisdictions": ["EU"]}}])
    eu = {s.name for s in out.workload.catalog.sites if s.jurisdiction == "EU"}
    specs = {a.spec.request_id: a.spec for a in out.workload.arrivals}
    readers = [r for r in out.rows if specs[r.trace_id].datasets and r.site]
    assert readers and all(r.site in eu for r in readers)
