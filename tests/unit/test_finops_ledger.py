"""The ledger and the showback add up: per-tag spend sums to the jobs' costs, across restarts."""

from __future__ import annotations

import csv
import io
import random
from datetime import UTC, datetime

import pytest

from placers.catalog import Catalog
from placers.domain import Attempt, CostBreakdown, InferenceSpec, Job, JobKind, JobState, Placement
from placers.registry import make_placer
from scheduler.clock import ManualClock
from scheduler.executors.sim import SimExecutor
from scheduler.finops.costing import accrual
from scheduler.finops.ledger import ALL, Ledger
from scheduler.finops.periods import month_of, parse_period
from scheduler.finops.showback import CSV_NUMERIC, UNTAGGED, showback, to_csv, to_dict
from scheduler.service import SchedulerService
from scheduler.settings import CycleSettings
from scheduler.store.base import JobQuery
from scheduler.store.memory import MemoryStore
from tests.conftest import spec

START = datetime(2026, 11, 30, 18, tzinfo=UTC).timestamp()  # six hours before December


def run_scenario(
    catalog: Catalog, seed: int = 7, store: MemoryStore | None = None
) -> tuple[SchedulerService, ManualClock]:
    """A mixed day crossing a month boundary: tags, data moves, failures with retries, cancels, services."""
    rng = random.Random(seed)
    clock = ManualClock(START)
    store = store or MemoryStore(catalog)
    executor = SimExecutor(clock, catalog, exit_code=lambda r: 3 if r.job_id in failing and r.attempt == 1 else 0)
    svc = SchedulerService(catalog, store, executor, make_placer("greedy"), clock, CycleSettings())
    failing: set[str] = set()
    to_cancel: list[str] = []
    for step in range(24):
        specs = []
        for _ in range(rng.randint(2, 6)):
            tags = {}
            if rng.random() < 0.9:
                tags["cost_center"] = rng.choice(["cc-a", "cc-b", "cc-c"])
            tags["project"] = rng.choice(["p1", "p2"])
            kw: dict[str, object] = {
                "gpus": rng.choice([1, 2, 8]),
                "runtime_s": rng.choice([1800.0, 7200.0, 20000.0]),
                "tags": tags,
                "max_retries": 1,
            }
            if rng.random() < 0.3:
                kw["datasets"] = ("code-corpus-v3",)
                kw["allowed_sites"] = (rng.choice(["aws-us-east-1", "azure-eastus", "lambda-us-south-1"]),)
            specs.append(spec(**kw))
        if step % 6 == 0:
            specs.append(
                spec(
                    kind=JobKind.INFERENCE,
                    runtime_s=0.0,
                    gpus=1,
                    inference=InferenceSpec(dedicated=True, replicas=2),
                    allowed_sites=("onprem-fra",),
                    tags={"cost_center": "cc-serve", "project": "p1"},
                )
            )
        for job, _ in svc.submit(specs):
            r = rng.random()
            if r < 0.1:
                failing.add(job.id)
            elif r < 0.2:
                to_cancel.append(job.id)
        svc.run_cycle()
        clock.advance(rng.choice([300.0, 900.0, 1800.0]))
        svc.run_cycle()
        if to_cancel and rng.random() < 0.5:
            svc.cancel(to_cancel.pop(), by="alice")
        svc.governance.ledger.sync()  # keep up as a running server would
    return svc, clock


def all_jobs(svc: SchedulerService) -> list[Job]:
    return svc.store.list_jobs(JobQuery(page_size=1_000_000))[0]


def test_per_tag_spend_sums_to_the_job_costs(catalog):
    svc, clock = run_scenario(catalog)
    now = clock.now()
    jobs = all_jobs(svc)
    params = svc.governance.params
    states = {j.state for j in jobs}
    assert {JobState.SUCCEEDED, JobState.RUNNING, JobState.CANCELLED} <= states
    assert any(len(j.attempts) > 1 for j in jobs), "the scenario has retried jobs"
    assert any(j.placement and j.placement.cost.egress_usd > 0 for j in jobs), "and data moves"
    for label in ("2026-11", "2026-12"):
        period = parse_period(label)
        job_total = sum(accrual(j, params, svc.governance.dedicated_pools).costs(period, now).total_usd for j in jobs)
        assert job_total > 0
        for by in (["cost_center"], ["project"], ["cost_center", "project"]):
            report = showback(jobs, by, period, now, params=params, catalog=catalog)
            assert sum(r.costs.total_usd for r in report.rows) == pytest.approx(job_total, rel=1e-12)
            assert report.total.costs.total_usd == pytest.approx(job_total, rel=1e-12)
            for r in report.rows:
                assert r.costs.total_usd == pytest.approx(
                    r.costs.compute_usd + r.costs.egress_usd + r.costs.storage_usd
                )
        # The ledger's figures are the same numbers, per tag value.
        report = showback(jobs, ["cost_center"], period, now, params=params, catalog=catalog)
        ledger = svc.governance.ledger.by_tag("cost_center", period, now)
        rows = {r.group[0]: r.costs for r in report.rows if r.group[0] != UNTAGGED}
        assert set(ledger) == set(rows)
        for cc, c in rows.items():
            assert ledger[cc].total_usd == pytest.approx(c.total_usd, rel=1e-9)
            assert ledger[cc].gpu_hours == pytest.approx(c.gpu_hours, rel=1e-9)
        everything = svc.governance.ledger.spend(period, [ALL], now)[ALL]
        assert everything.accrued.total_usd == pytest.approx(job_total, rel=1e-9)


def test_committed_spend_is_what_running_placements_still_project(catalog):
    svc, clock = run_scenario(catalog)
    now = clock.now()
    jobs = all_jobs(svc)
    params = svc.governance.params
    month = month_of(now)
    spend = svc.governance.ledger.spend(month, [("cost_center", "cc-a"), ("cost_center", "cc-serve")], now)
    for cc in ("cc-a", "cc-serve"):
        mine = [j for j in jobs if j.spec.tags.get("cost_center") == cc]
        expected = sum(accrual(j, params).committed_usd(now) for j in mine if j.state.holds_capacity)
        assert spend[("cost_center", cc)].committed_usd == pytest.approx(expected)
    assert spend[("cost_center", "cc-serve")].committed_usd > 0  # services commit their costing horizon


def test_ledger_survives_a_restart_and_missed_events(catalog, monkeypatch):
    svc, clock = run_scenario(catalog)
    now = clock.now()
    month = month_of(now)
    before = svc.governance.ledger.by_tag("project", month, now)
    fresh = Ledger(svc.store, svc.governance.params, svc.governance.dedicated_pools)  # a restarted scheduler
    fresh.sync()
    after = fresh.by_tag("project", month, now)
    assert set(before) == set(after) == {"p1", "p2"}
    for k in before:
        assert after[k].total_usd == pytest.approx(before[k].total_usd, rel=1e-9)

    # A store that keeps few events: the ledger notices the gap and rebuilds from the jobs.
    from scheduler.store import memory

    monkeypatch.setattr(memory, "EVENT_HISTORY", 20)
    svc2, clock2 = run_scenario(catalog, seed=11, store=MemoryStore(catalog))
    ledger = svc2.governance.ledger
    assert ledger.rebuilds > 1
    now2 = clock2.now()
    truth = showback(all_jobs(svc2), ["project"], month_of(now2), now2, params=svc2.governance.params)
    got = ledger.by_tag("project", month_of(now2), now2)
    for r in truth.rows:
        assert got[r.group[0]].total_usd == pytest.approx(r.costs.total_usd, rel=1e-9)


def test_report_csv_opens_as_a_spreadsheet_would(catalog):
    svc, clock = run_scenario(catalog)
    report = svc.governance.report(["cost_center"], parse_period("2026-11"), now=clock.now())
    text = to_csv(report)
    assert text.startswith("cost_center,jobs,compute_usd,egress_usd,storage_usd,total_usd,gpu_hours,")
    assert "\r\n" in text
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [r["cost_center"] for r in rows] == [r.group[0] for r in report.rows]
    assert len(rows) == len(report.rows) >= 3
    for row, r in zip(rows, report.rows, strict=True):
        values = {k: float(row[k]) for k in CSV_NUMERIC}  # every numeric column parses
        assert values["total_usd"] == pytest.approx(r.costs.total_usd, abs=0.005)
        assert values["jobs"] == r.jobs and row["period"] == "2026-11"
        assert values["compute_usd"] + values["egress_usd"] + values["storage_usd"] == pytest.approx(
            values["total_usd"], abs=0.02
        )
        if values["gpu_hours"]:
            assert values["usd_per_gpu_hour"] == pytest.approx(values["total_usd"] / values["gpu_hours"], rel=1e-2)
    as_json = to_dict(report)
    assert as_json["total"]["total_usd"] == pytest.approx(report.total.costs.total_usd, abs=0.005)


def test_idle_and_underused_reservations_are_flagged(catalog):
    t0 = parse_period("2026-11").start
    now = t0 + 10 * 3600
    svc_placement = Placement(
        "onprem-fra", "l40s-inference", "L40S", False, t0, None, CostBreakdown(396.0), 0.0
    )  # 1 GPU x 30 days x $0.55
    service = Job(
        "j-svc",
        spec(
            kind=JobKind.INFERENCE,
            runtime_s=0.0,
            inference=InferenceSpec(dedicated=True),
            tags={"cost_center": "serve"},
        ),
        JobState.RUNNING,
        t0,
        t0,
        placement=svc_placement,
        started_at=t0,
        attempts=(Attempt(1, "onprem-fra", t0, None, JobState.RUNNING),),
    )
    stuck_placement = Placement("aws-us-east-1", "p5", "H100-80GB", False, t0, t0 + 7200, CostBreakdown(110.0), 0.0)
    stuck = Job(
        "j-stuck",
        spec(gpus=8, runtime_s=7200.0, tags={"cost_center": "train"}),
        JobState.PLACED,
        t0,
        t0,
        placement=stuck_placement,
        attempts=(Attempt(1, "aws-us-east-1", t0, None, JobState.PLACED),),
    )
    report = showback([service, stuck], ["cost_center"], parse_period("2026-11"), now, catalog=catalog)
    rows = {r.group[0]: r for r in report.rows}
    assert any(f.startswith("idle reservation: 80.00 of 80.00 GPU-h") for f in rows["train"].flags)
    assert rows["serve"].costs.dedicated_gpu_hours == pytest.approx(10.0)
    assert any("dedicated capacity underused: onprem-fra/l40s-inference 4% used" in f for f in rows["serve"].flags)
    pool = next(p for p in report.pools if p.pool == "l40s-inference")
    assert pool.dedicated and pool.flagged and pool.capacity_gpu_hours == pytest.approx(24 * 10)
    assert rows["serve"].costs.compute_usd == pytest.approx(0.55 * 10)
