"""Short replays of the real traces, checked against invariants and expected figures.

The invariants are worked out independently of the scheduler (a job holds its GPUs for exactly its
trace duration scaled by GPU speed plus its data transfer; showback adds up; on-prem never runs
over capacity; EU-resident data never leaves the EU). The expected figures were measured on this
code and sanity-checked by hand; their tolerances absorb small, deliberate changes of policy, not
breakage (a broken replay moves them by far more).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from simulations.runner import run_scenario
from simulations.scenario import load_scenario
from tests.sim.conftest import SCENARIOS

pytestmark = pytest.mark.traces


@pytest.fixture(scope="module")
def philly(traces):
    scenario = load_scenario(
        SCENARIOS / "philly_hybrid.yaml",
        {
            "trace.limit": 1500,
            "catalog.onprem.0.node_scale": 0.05,  # 18 nodes: the first weeks of Philly burst
            "report.plots": False,
        },
    )
    return run_scenario(scenario, progress=False, write=False)


def test_philly_every_job_ends_and_holds_gpus_for_its_scaled_duration(philly):
    wl, rows = philly.workload, philly.rows
    assert len(rows) == 1500 and {r.state for r in rows} <= {"succeeded", "rejected"}
    jobs = {j.id: j for j in philly.result.jobs}
    for r in rows:
        if r.state != "succeeded":
            continue
        duration, measured_speed = wl.truth[r.trace_id]
        expected = duration * measured_speed / wl.catalog.gpu_models[r.gpu_model].speed
        assert r.held_s == pytest.approx(expected + jobs[r.id].placement.transfer_s, rel=1e-9, abs=1e-6)


def test_philly_costs_add_up_by_tag_and_onprem_price(philly):
    report, rows = philly.report, philly.rows
    jobs_usd = report["cost"]["jobs_usd"]
    for key, groups in report["cost"]["by_tag"].items():
        assert sum(g["total_usd"] for g in groups.values()) == pytest.approx(jobs_usd, rel=1e-9), key
    onprem = sum(r.gpus * r.held_s / 3600 * 0.12 for r in rows if r.onprem)
    assert report["cost"]["compute_onprem_usd"] == pytest.approx(onprem, rel=1e-9)


def test_philly_onprem_never_over_capacity_and_eu_data_stays_in_eu(philly):
    wl, rows, report = philly.workload, philly.rows, philly.report
    capacity = wl.catalog.total_gpus("philly")
    busy = report["utilisation_series"]["busy_gpus"]["philly"]
    assert max(busy) <= capacity + 1e-9 and max(busy) > 0.5 * capacity
    eu_sites = {s.name for s in wl.catalog.sites if s.jurisdiction == "EU"}
    eu_data = {d.id for d in wl.catalog.datasets.values() if d.classification == "eu-gdpr"}
    specs = {j.id: j.spec for j in philly.result.jobs}
    readers = [r for r in rows if set(specs[r.id].datasets) & eu_data and r.site]
    assert readers and all(r.site in eu_sites for r in readers)


def test_philly_expected_figures(philly):
    r = philly.report
    assert r["jobs"]["succeeded"] == pytest.approx(1493, abs=5)
    assert r["burst"]["share_of_gpu_hours"] == pytest.approx(0.167, abs=0.03)
    assert r["deadlines"]["attainment"] == pytest.approx(0.985, abs=0.01)
    assert r["jct_s"]["p50"] == pytest.approx(84, rel=0.25)
    assert r["cost"]["total_usd"] == pytest.approx(44_600, rel=0.08)
    assert r["utilisation"]["mean_onprem"]["philly"] == pytest.approx(0.33, abs=0.04)


@pytest.fixture(scope="module")
def openb(traces):
    scenario = load_scenario(SCENARIOS / "openb_replay.yaml", {"trace.limit": 400, "report.plots": False})
    return run_scenario(scenario, progress=False, write=False)


def test_openb_fractional_gpus_share_slots_and_fragmentation_is_bounded(openb):
    assert {r.state for r in openb.rows} == {"succeeded"}
    intervals = defaultdict(list)
    for j in openb.result.jobs:
        p = j.placement
        for b in p.bindings:
            for slot in b.gpu_slots:
                intervals[(p.site, p.pool, b.node, slot)].append((j.started_at, j.finished_at, b.gpu_milli))
    shared = 0
    for spans in intervals.values():
        events = sorted([(s, m) for s, _, m in spans] + [(e, -m) for _, e, m in spans], key=lambda x: (x[0], x[1]))
        load = np.cumsum([m for _, m in events])
        assert load.max() <= 1000  # never more than one GPU's worth on a slot
        shared += int(any(n > 1 for n in np.cumsum([1 if m > 0 else -1 for _, m in events])))
    assert shared > 0  # some GPUs really were shared by pods at the same time
    samples = openb.result.samples
    assert samples and all(0 <= s.fragmented_gpus <= s.free_gpus + 1e-9 for s in samples)
    assert openb.report["fragmentation"]["alibaba"]["mean_fragmented_gpus"] > 0
