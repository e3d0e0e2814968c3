"""The scheduling cycle end to end on the memory store and the virtual executor."""

from __future__ import annotations

import pytest

from placers.domain import JobState
from scheduler.admission import InvalidSpec
from scheduler.service import NotFound
from scheduler.store.base import EventKind, JobQuery
from tests.conftest import spec


def states(svc, jobs):
    return [svc.get(j.id).state for j in jobs]


def test_submit_place_run_succeed(make_service, clock):
    svc = make_service()
    ((job, created),) = svc.submit([spec(gpus=8, single_node=True, runtime_s=7200)])
    assert created and job.state is JobState.PENDING
    report = svc.run_cycle()
    assert report.placed == 1 and report.launched == 1
    placed = svc.get(job.id)
    assert placed.state is JobState.PLACED
    assert placed.placement.site == "onprem-sjc"  # cheapest: amortised on-prem
    assert placed.placement.cost.total_usd > 0
    svc.run_cycle()
    assert svc.get(job.id).state is JobState.RUNNING
    clock.advance(7200)
    svc.run_cycle()
    done = svc.get(job.id)
    assert done.state is JobState.SUCCEEDED and done.exit_code == 0 and done.finished_at
    assert [a.state for a in done.attempts] == [JobState.SUCCEEDED]


def test_request_id_is_idempotent(make_service):
    svc = make_service()
    ((a, c1),) = svc.submit([spec(request_id="r-1")])
    ((b, c2),) = svc.submit([spec(request_id="r-1", name="other")])
    assert (c1, c2) == (True, False) and a.id == b.id


def test_invalid_batch_accepts_nothing(make_service):
    svc = make_service()
    with pytest.raises(InvalidSpec, match=r"specs\[1\]\.gpus"):
        svc.submit([spec(), spec(gpus=0)])
    assert svc.list_jobs(JobQuery())[0] == []


def test_rejected_only_when_no_site_ever_could(make_service):
    svc = make_service()
    (never, _), (later, _) = svc.submit(
        [
            spec(datasets=("eu-customer-support-2026",), allowed_jurisdictions=("US",)),
            spec(gpus=8, single_node=True, allowed_sites=("onprem-fra",), runtime_s=60),
        ]
    )
    # fill onprem-fra's A100 pool so the second job has to wait
    blockers = svc.submit(
        [spec(gpus=8, single_node=True, allowed_sites=("onprem-fra",), runtime_s=60) for _ in range(8)]
    )
    svc.run_cycle()
    j = svc.get(never.id)
    assert j.state is JobState.REJECTED
    assert "eu-customer-support-2026 is eu-gdpr" in j.reason and "jurisdiction" in j.reason
    placed = [svc.get(b.id).state for b, _ in [(later, 0), *blockers]]
    assert placed.count(JobState.PLACED) == 8 and placed.count(JobState.PENDING) == 1
    waiting = next(svc.get(b.id) for b, _ in [(later, 0), *blockers] if svc.get(b.id).state is JobState.PENDING)
    assert waiting.reason.startswith("waiting: no free capacity")


def test_waiting_job_placed_when_capacity_frees(make_service, clock):
    svc = make_service()
    jobs = [
        j
        for j, _ in svc.submit(
            [spec(gpus=8, single_node=True, allowed_sites=("onprem-fra",), runtime_s=600) for _ in range(9)]
        )
    ]
    svc.run_cycle()
    assert states(svc, jobs).count(JobState.PENDING) == 1
    clock.advance(601)
    svc.run_cycle()  # completions free capacity; the waiting job goes in the same cycle
    st = states(svc, jobs)
    assert st.count(JobState.SUCCEEDED) == 8 and st.count(JobState.PLACED) == 1


def test_deadline_that_passes_while_waiting_rejects(make_service, clock):
    svc = make_service()
    fill = [spec(gpus=8, single_node=True, allowed_sites=("onprem-fra",), runtime_s=7200, priority=1) for _ in range(8)]
    svc.submit(fill)
    ((late, _),) = svc.submit(
        [spec(gpus=8, single_node=True, allowed_sites=("onprem-fra",), runtime_s=3600, deadline_at=clock.now() + 5000)]
    )
    svc.run_cycle()
    assert svc.get(late.id).state is JobState.PENDING
    clock.advance(1500)  # now only 3500 s left: a 3600 s job can no longer make it
    svc.run_cycle()
    j = svc.get(late.id)
    assert j.state is JobState.REJECTED and "deadline" in j.reason


def test_cancel_pending_and_running_release_capacity(make_service):
    svc = make_service()
    (a, _), _ = svc.submit([spec(gpus=8, single_node=True, allowed_sites=("onprem-fra",)), spec()])
    svc.run_cycle()
    svc.run_cycle()
    assert svc.get(a.id).state is JobState.RUNNING
    pool = svc.catalog.pool_index["onprem-fra/a100"]
    before = svc.store.snapshot().capacity.free_gpus(pool)
    cancelled = svc.cancel(a.id, by="alice")
    assert cancelled.state is JobState.CANCELLED and cancelled.cancelled_by == "alice"
    assert svc.store.snapshot().capacity.free_gpus(pool) == before + 8
    assert svc.cancel(a.id).state is JobState.CANCELLED  # idempotent
    with pytest.raises(NotFound):
        svc.cancel("j-nope")


def test_failed_attempt_is_retried_then_fails(make_service, catalog, clock):
    from scheduler.executors.sim import SimExecutor

    svc = make_service()
    svc.executor = SimExecutor(clock, catalog, exit_code=lambda r: 7)
    ((job, _),) = svc.submit([spec(runtime_s=60, max_retries=1)])
    svc.run_cycle()
    clock.advance(100)
    svc.run_cycle()  # attempt 1 fails -> back to pending, placed again in the same cycle
    j = svc.get(job.id)
    assert j.state is JobState.PLACED and len(j.attempts) == 2 and j.attempts[0].state is JobState.FAILED
    clock.advance(100)
    svc.run_cycle()
    clock.advance(100)
    svc.run_cycle()
    j = svc.get(job.id)
    assert j.state is JobState.FAILED and j.exit_code == 7 and len(j.attempts) == 2


def test_events_tell_the_story(make_service, clock):
    svc = make_service()
    ((job, _),) = svc.submit([spec(runtime_s=10)])
    svc.run_cycle()
    svc.run_cycle()
    clock.advance(20)
    svc.run_cycle()
    kinds = [e.kind for e in svc.events(0, job.id)]
    assert kinds == [EventKind.SUBMITTED, EventKind.PLACED, EventKind.RUNNING, EventKind.SUCCEEDED]


def test_explain_eu_data_not_in_us(make_service):
    svc = make_service()
    ((job, _),) = svc.submit([spec(gpus=8, single_node=True, datasets=("eu-customer-support-2026",))])
    svc.run_cycle()
    job, ex = svc.explain_job(job.id)
    assert ex.chosen is not None and svc.catalog.site(ex.chosen.site).jurisdiction == "EU"
    us = [c for c in ex.candidates if c.site == "aws-us-east-1"]
    assert us and all(not c.feasible for c in us)
    assert any("eu-customer-support-2026 is eu-gdpr" in r for c in us for r in c.reasons)
    assert "eu-gdpr" in ex.summary


def test_dry_run_explain_submits_nothing(make_service):
    svc = make_service()
    ex = svc.explain_spec(spec(datasets=("claims-2025",)))
    assert ex.chosen is not None and ex.chosen.site == "onprem-sjc"
    assert svc.list_jobs(JobQuery())[0] == []


def test_placed_dataset_copy_becomes_a_replica(make_service):
    svc = make_service()
    # imagenet-21k lives at onprem-sjc and gcp-us-central1; force a copy to AWS
    ((job, _),) = svc.submit([spec(datasets=("imagenet-21k",), allowed_sites=("aws-us-east-1",))])
    svc.run_cycle()
    placement = svc.get(job.id).placement
    assert placement.data_moves and placement.data_moves[0].to_site == "aws-us-east-1"
    assert "aws-us-east-1" in svc.store.snapshot().replicas["imagenet-21k"]
    ex = svc.explain_spec(spec(datasets=("imagenet-21k",), allowed_sites=("aws-us-east-1",)))
    assert ex.chosen is not None and ex.chosen.cost.egress_usd == 0 and ex.chosen.transfer_s == 0


def test_budget_holds_jobs(make_service):
    svc = make_service(budgets_usd={"cc-small": 5.0})
    (cheap, _), (dear, _) = svc.submit(
        [
            spec(tags={"cost_center": "cc-small"}, runtime_s=60),
            spec(gpus=8, tags={"cost_center": "cc-small"}, runtime_s=36000),
        ]
    )
    svc.run_cycle()
    assert svc.get(cheap.id).state is JobState.PLACED
    j = svc.get(dear.id)
    assert j.state is JobState.PENDING and "budget" in j.reason


def test_cycle_work_follows_events_not_the_waiting_backlog(catalog, clock):
    from placers.registry import make_placer
    from scheduler.executors.sim import SimExecutor
    from scheduler.service import SchedulerService
    from scheduler.settings import CycleSettings
    from scheduler.store.memory import MemoryStore

    cycle = CycleSettings(sweep_batch=50, retry_waiting_s=60, wait_policy="no-wait")
    store = MemoryStore(catalog)
    svc = SchedulerService(catalog, store, SimExecutor(clock, catalog), make_placer("greedy"), clock, cycle)
    whole_node = {"gpus": 8, "single_node": True, "allowed_sites": ("onprem-sjc",), "runtime_s": 86400.0}
    jobs = [j for j, _ in svc.submit([spec(name=f"n{i}", **whole_node) for i in range(200)])]
    first = svc.run_cycle()
    assert first.considered == 200 and first.waiting > 100
    waiting = first.waiting
    # one new job: the cycle decides that job alone, not the backlog
    svc.submit([spec(name="late", **whole_node)])
    assert svc.run_cycle().considered == 1
    assert svc.run_cycle().considered == 0
    # capacity frees: the head of the queue, about twice the GPUs released (+ slack), is re-decided
    running = next(j for j in jobs if svc.get(j.id).state in (JobState.PLACED, JobState.RUNNING))
    svc.cancel(running.id, "test")
    freed = svc.run_cycle()
    assert 1 <= freed.considered <= 3 and freed.placed == 1
    # the periodic sweep re-decides the whole backlog, sweep_batch jobs per cycle
    clock.advance(61)
    sizes = []
    while (report := svc.run_cycle()).considered:
        sizes.append(report.considered)
    assert sizes[:-1] == [50] * (len(sizes) - 1) and sum(sizes) == waiting  # the late job replaced the placed one
    assert svc.next_wakeup() == pytest.approx(clock.now() + 60)
    # a requested retry (a budget raised) starts a sweep at once
    svc.retry_waiting()
    assert svc.run_cycle().considered == 50
