"""Restart recovery, leader election and fencing, in process, on both stores.

A "restart" is a new SchedulerService with a new (empty) SimExecutor on the same store: what a
process that was killed finds when it comes back. The fault tests (test_faults.py) do the same with
real processes and signals.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from placers.catalog import Catalog
from placers.domain import JobState
from placers.registry import make_placer
from scheduler.clock import ManualClock
from scheduler.executors.sim import SimExecutor
from scheduler.leader import Leader
from scheduler.service import SchedulerService
from scheduler.settings import CycleSettings
from scheduler.store.base import JobUpdate, Plan, Store
from scheduler.store.memory import MemoryStore
from scheduler.store.redis import RedisStore
from tests.conftest import spec
from tests.redis_support import REDIS_URL, fresh_redis

TTL_S = 0.4


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def new_store(request: pytest.FixtureRequest, catalog: Catalog) -> Iterator[Callable[[], Store]]:
    """Stores on the same state: one MemoryStore, or a new RedisStore (a new process) on one database."""
    made: list[Store] = []
    if request.param == "memory":
        shared = MemoryStore(catalog)

        def make() -> Store:
            return shared
    else:
        fresh_redis().close()

        def make() -> Store:
            s = RedisStore(catalog, REDIS_URL)
            made.append(s)
            return s

    yield make
    for s in made:
        s.close()


def service(store: Store, catalog: Catalog, clock: ManualClock, leader: Leader | None = None) -> SchedulerService:
    kw = {"epoch": leader.epoch, "is_leader": leader.is_leader} if leader else {}
    return SchedulerService(
        catalog, store, SimExecutor(clock, catalog), make_placer("greedy"), clock, CycleSettings(), **kw
    )


def wait_leading(leader: Leader, timeout_s: float = 5.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if leader.renew():
            return leader.epoch()
        time.sleep(0.05)
    raise AssertionError(f"{leader.holder} did not become leader within {timeout_s} s")


def test_restart_relaunches_placed_and_retries_lost(new_store, catalog: Catalog, clock: ManualClock) -> None:
    store = new_store()
    old_leader = Leader(store, TTL_S, holder="old")
    old = service(store, catalog, clock, old_leader)
    e1 = wait_leading(old_leader)
    (running, _), (claimed, _), (unclaimed, _), (queued, _) = old.submit(
        [spec(runtime_s=600, max_retries=1), spec(runtime_s=600, max_retries=0), spec(runtime_s=600), spec()]
    )
    # running: placed, launched and reported running by the old process
    old.store.commit(Plan(store.snapshot().version, placements={running.id: _placement(old, running.id)}, epoch=e1))
    old._launch_claims(e1, [(running.id, 1)])
    old.reconcile()
    # claimed: the old process claimed the launch and died before the executor heard of it
    old.store.commit(Plan(store.snapshot().version, placements={claimed.id: _placement(old, claimed.id)}, epoch=e1))
    assert store.claim_launches(e1, [(claimed.id, 1)])[0].job is not None
    # unclaimed: committed, then the process died before claiming
    old.store.commit(Plan(store.snapshot().version, placements={unclaimed.id: _placement(old, unclaimed.id)}, epoch=e1))
    assert [old.get(j.id).state for j in (running, claimed, unclaimed, queued)] == [
        JobState.RUNNING, JobState.PLACED, JobState.PLACED, JobState.PENDING
    ]  # fmt: skip
    # kill: nothing released, the lease runs out
    time.sleep(TTL_S + 0.1)
    new_leader = Leader(new_store(), TTL_S, holder="new")
    new = service(new_leader.store, catalog, clock, new_leader)
    e2 = wait_leading(new_leader)
    assert e2 > e1
    new.step()  # recover, then a cycle
    assert isinstance(new.executor, SimExecutor)
    r, c, u, q = (new.get(j.id) for j in (running, claimed, unclaimed, queued))
    # the running attempt was lost with the old executor: failed with the cause, retried
    assert [a.state for a in r.attempts] == [JobState.FAILED, JobState.PLACED] and "lost" in r.attempts[0].cause
    assert r.state is JobState.PLACED
    # claimed by the old epoch, unknown to the executor: lost too; a platform failure, so retried
    # although the job allows no retries of its own
    assert c.spec.max_retries == 0 and c.state is JobState.PLACED and len(c.attempts) == 2
    assert c.attempts[0].cause.startswith("infrastructure: lost")
    # never claimed: launched by the recovery, same attempt (already reported running in the cycle)
    assert u.state is JobState.RUNNING and len(u.attempts) == 1
    assert q.state is JobState.PLACED
    assert set(new.executor.active()) == {running.id, claimed.id, unclaimed.id, queued.id}
    assert new.executor.active()[running.id] == 2 and new.executor.active()[claimed.id] == 2
    assert sum(new_leader.store.counts().values()) == 4  # nothing acknowledged is lost


def test_a_partitioned_site_is_not_declared_lost(new_store, catalog: Catalog, clock: ManualClock) -> None:
    """A restarted scheduler that cannot reach a site must not rerun what may still be running there."""
    old = service(new_store(), catalog, clock)
    ((job, _),) = old.submit([spec(runtime_s=600)])
    old.run_cycle()
    old.run_cycle()
    site = old.get(job.id).placement.site
    assert old.get(job.id).state is JobState.RUNNING
    new = service(new_store(), catalog, clock)  # a new process: its executor knows nothing yet
    assert isinstance(new.executor, SimExecutor)
    new.executor.set_unavailable(frozenset({site}))
    new.recover()
    j = new.get(job.id)
    assert j.state is JobState.RUNNING and len(j.attempts) == 1  # left alone during the partition
    new.executor.set_unavailable(frozenset())
    new.recover()  # the site answers and does not run it: now it is lost, and retried
    j = new.get(job.id)
    assert j.attempts[0].state is JobState.FAILED and "lost" in j.attempts[0].cause


def test_recovery_stops_work_the_store_does_not_hold(new_store, catalog: Catalog, clock: ManualClock) -> None:
    svc = service(new_store(), catalog, clock)
    (kept, _), (cancelled, _) = svc.submit([spec(runtime_s=600), spec(runtime_s=600)])
    svc.run_cycle()
    svc.run_cycle()
    # cancelled through another replica: the store says cancelled, this executor still runs it
    svc.store.update(JobUpdate(cancelled.id, JobState.CANCELLED, clock.now(), cancelled_by="elsewhere"))
    assert set(svc.executor.active()) == {kept.id, cancelled.id}
    svc.recover()
    assert set(svc.executor.active()) == {kept.id}
    assert svc.get(kept.id).state is JobState.RUNNING


def test_deposed_leader_neither_commits_nor_launches(new_store, catalog: Catalog, clock: ManualClock) -> None:
    store = new_store()
    first = Leader(store, TTL_S, holder="first")
    e1 = wait_leading(first)
    # A leader that was paused and has not noticed yet: it still believes it leads at e1.
    stale = service(store, catalog, clock)
    stale.epoch, stale.is_leader = (lambda: e1), (lambda: True)
    ((job, _),) = stale.submit([spec()])
    time.sleep(TTL_S + 0.1)
    second = Leader(new_store(), TTL_S, holder="second")
    e2 = wait_leading(second)
    assert e2 > e1
    report = stale.run_cycle()
    assert report.placed == 0 and report.conflicts >= 1  # its plan was fenced
    assert store.get(job.id).state is JobState.PENDING
    # the new leader places it; the stale one then tries to launch it at e1: refused before the executor
    current = service(second.store, catalog, clock, second)
    current.step()
    assert current.get(job.id).state in (JobState.PLACED, JobState.RUNNING)
    assert stale._launch_claims(e1, [(job.id, 1)]) == 0
    assert isinstance(stale.executor, SimExecutor) and stale.executor.launches == 0
    assert isinstance(current.executor, SimExecutor) and current.executor.launches == 1


def test_follower_accepts_submissions_and_takes_over(new_store, catalog: Catalog, clock: ManualClock) -> None:
    a_leader, b_leader = Leader(new_store(), TTL_S, holder="a"), Leader(new_store(), TTL_S, holder="b")
    a = service(a_leader.store, catalog, clock, a_leader)
    b = service(b_leader.store, catalog, clock, b_leader)
    wait_leading(a_leader)
    assert b_leader.renew() == 0 and not b.is_leader()
    ((job, _),) = b.submit([spec(runtime_s=60)])
    assert b.step() is None  # a follower does not cycle
    assert b.get(job.id).state is JobState.PENDING
    a.step()
    assert b.get(job.id).state is JobState.PLACED  # followers read the shared state
    a_leader.stop()  # clean shutdown hands the lease over at once
    assert b_leader.renew() > 0
    clock.advance(100)
    b.step()  # recovery: the attempt ran on a's executor, unknown here -> lost, retried on b's
    got = b.get(job.id)
    assert got.state is JobState.PLACED and len(got.attempts) == 2 and "lost" in got.attempts[0].cause
    clock.advance(100)
    b.step()
    b.step()
    assert b.get(job.id).state is JobState.SUCCEEDED


def _placement(svc: SchedulerService, job_id: str):  # type: ignore[no-untyped-def]
    """The placement the service's placer would choose for a pending job now."""
    job = svc.get(job_id)
    snap = svc.store.snapshot()
    problem = svc._build([job], snap, svc.clock.now())
    result = svc.placer.place(problem)
    plan, _ = svc._plan(problem, result, snap, svc.clock.now())
    return plan.placements[job_id]
