"""A job's cost from its record: compute for the time it held GPUs at its price, egress and storage."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from placers.domain import Attempt, CostBreakdown, Job, JobKind, JobState, Placement
from scheduler.finops.costing import CostParams, accrual, usd_per_s
from scheduler.finops.periods import parse_period
from tests.conftest import spec

T0 = datetime(2026, 11, 30, 22, tzinfo=UTC).timestamp()  # two hours before December


def placed_job(state: JobState, *, started: float | None, ended: float | None, egress: float = 0.0) -> Job:
    # 4 GPUs for an estimated 10 h at $2/GPU-h: $80 of compute
    p = Placement(
        "aws-us-east-1",
        "p4de",
        "A100-80GB",
        False,
        T0,
        T0 + 600 + 36000,
        CostBreakdown(80.0, egress, 3.0 if egress else 0.0),
        600.0,
    )
    att = Attempt(1, p.site, T0, ended, state)
    return Job(
        "j-1",
        spec(gpus=4, runtime_s=36000),
        state,
        T0 - 60,
        T0,
        placement=p,
        started_at=started,
        finished_at=ended,
        attempts=(att,),
    )


def test_rate_is_the_price_the_placement_got():
    job = placed_job(JobState.RUNNING, started=T0, ended=None)
    assert usd_per_s(job.placement, JobKind.TRAINING, CostParams()) == pytest.approx(80.0 / 36000)


def test_finished_job_costs_its_held_time_split_by_month():
    job = placed_job(JobState.SUCCEEDED, started=T0 + 60, ended=T0 + 5 * 3600, egress=12.5)
    acc = accrual(job, CostParams())
    nov, dec = parse_period("2026-11"), parse_period("2026-12")
    now = T0 + 10 * 3600
    a, b = acc.costs(nov, now), acc.costs(dec, now)
    rate_h = 80.0 / 10  # $ per hour of the job's 4 GPUs
    assert a.compute_usd == pytest.approx(2 * rate_h) and b.compute_usd == pytest.approx(3 * rate_h)
    assert (a.egress_usd, a.storage_usd, b.egress_usd) == (12.5, 3.0, 0.0)  # charged when the copy is made
    assert a.gpu_hours == pytest.approx(8.0) and b.gpu_hours == pytest.approx(12.0)
    assert a.idle_gpu_hours == pytest.approx(4 * 60 / 3600)  # launched at T0, running from T0 + 60
    assert acc.committed_usd(now) == 0.0
    assert acc.total(now).total_usd == pytest.approx(5 * rate_h + 15.5)
    monthly = acc.monthly(now)
    assert set(monthly) == {"2026-11", "2026-12"}
    assert sum(c.total_usd for c in monthly.values()) == pytest.approx(acc.total(now).total_usd)


def test_running_job_accrues_and_commits_the_rest_of_its_estimate():
    job = placed_job(JobState.RUNNING, started=T0, ended=None)
    acc = accrual(job, CostParams())
    now = T0 + 2.5 * 3600
    accrued = acc.total(now).compute_usd
    assert accrued == pytest.approx(20.0)
    assert acc.committed_usd(now) == pytest.approx(60.0)
    assert acc.committed_usd(T0 + 20 * 3600) == 0.0  # ran past its estimate: nothing more committed


def test_placed_but_not_running_is_idle_reservation():
    job = placed_job(JobState.PLACED, started=None, ended=None)
    c = accrual(job, CostParams()).total(T0 + 1800)
    assert c.gpu_hours == pytest.approx(2.0) and c.idle_gpu_hours == pytest.approx(2.0) and c.compute_usd > 0


def test_cancelled_before_its_planned_start_pays_no_transfer():
    p = Placement("aws-us-east-1", "p4de", "A100-80GB", False, T0 + 3600, None, CostBreakdown(80.0, 50.0, 5.0), 600.0)
    att = Attempt(1, p.site, T0 + 3600, T0 + 100, JobState.CANCELLED)
    job = Job("j", spec(), JobState.CANCELLED, T0, T0 + 100, placement=p, finished_at=T0 + 100, attempts=(att,))
    c = accrual(job, CostParams()).total(T0 + 7200)
    assert c.egress_usd == 0 and c.compute_usd == 0


def test_never_placed_job_costs_nothing():
    job = Job("j", spec(), JobState.REJECTED, T0, T0, reason="no site")
    assert accrual(job, CostParams()).total(T0 + 10).zero


def test_earlier_attempts_elsewhere_use_the_site_price():
    job = placed_job(JobState.SUCCEEDED, started=T0, ended=T0 + 3600)
    first = Attempt(1, "onprem-sjc", T0 - 7200, T0 - 3600, JobState.FAILED)
    second = Attempt(2, job.placement.site, T0, T0 + 3600, JobState.SUCCEEDED)
    job = job.evolve(attempts=(first, second))
    acc = accrual(job, CostParams(site_usd_per_gpu_hour={"onprem-sjc": 0.85}))
    assert acc.segments[0].usd_per_s * 3600 == pytest.approx(4 * 0.85)
    assert acc.total(T0 + 7200).compute_usd == pytest.approx(4 * 0.85 + 8.0)
