"""The store contract: MemoryStore and RedisStore pass the same tests, with the same results.

Each test gets a fresh store of each kind (the Redis one on a flushed test database, see
tests/redis_support.py); Redis cases are marked `redis` and fail, never skip, without Redis.
"""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from placers.capacity import Demand
from placers.domain import CostBreakdown, InferenceSpec, Job, JobKind, JobState, Placement
from scheduler.store.base import ClaimVerdict, EventKind, JobQuery, JobUpdate, Plan, Store
from tests.conftest import spec

T0 = 1_800_000_000.0
_ids = itertools.count(1)


def job(at: float = T0, **kw: object) -> Job:
    return Job(id=f"j-{next(_ids):06d}", spec=spec(**kw), state=JobState.PENDING, created_at=at, updated_at=at)


def submit(store: Store, *jobs: Job) -> list[Job]:
    return [j for j, _ in store.submit(jobs)]


def placement(store: Store, j: Job, pool_key: str = "onprem-fra/a100", at: float = T0 + 1) -> Placement:
    """Where `j` fits in `pool_key` on the store's current snapshot."""
    cat = store.catalog  # type: ignore[attr-defined]
    pool = cat.pool_index[pool_key]
    bindings = store.snapshot().capacity.find(pool, Demand.of(j.spec))
    assert bindings is not None, f"{j.spec.gpus} GPUs do not fit {pool_key}"
    p = cat.pools[pool]
    return Placement(p.site, p.name, p.gpu_model, False, at, at + 60, CostBreakdown(1.0), 0.0, bindings)


def place(store: Store, *jobs: Job, pool_key: str = "onprem-fra/a100") -> None:
    snap = store.snapshot()
    plan = Plan(snap.version, placements={j.id: placement(store, j, pool_key) for j in jobs})
    assert store.commit(plan)


def free(store: Store, pool_key: str = "onprem-fra/a100") -> float:
    return store.snapshot().capacity.free_gpus(store.catalog.pool_index[pool_key])  # type: ignore[attr-defined]


# ---------------------------------------------------------------------- submit


def test_submit_is_idempotent_by_request_id(store: Store) -> None:
    a, b, c = job(request_id="r-1"), job(request_id="r-1", name="again"), job()
    out = store.submit([a, b, c])
    assert [(j.id, created) for j, created in out] == [(a.id, True), (a.id, False), (c.id, True)]
    ((again, created),) = store.submit([job(request_id="r-1")])
    assert not created and again == a
    ((d, created2),) = store.submit([job()])  # no request id: every submission is a new job
    assert created2 and d.id != c.id
    assert store.get(a.id) == a and store.get(b.id) is None
    assert store.counts()[JobState.PENDING] == 3


def test_duplicate_job_id_is_an_error(store: Store) -> None:
    a = job()
    submit(store, a)
    with pytest.raises(ValueError, match="duplicate job id"):
        store.submit([a.evolve(spec=spec(request_id="other"))])


def test_get_many_keeps_order_and_misses(store: Store) -> None:
    a, b = submit(store, job(), job())
    assert store.get_many([b.id, "j-nope", a.id]) == [b, None, a]
    assert store.get("j-nope") is None


def test_pending_queue_order_priority_then_submission(store: Store) -> None:
    low1, high1, mid, high2, low2 = submit(
        store, job(priority=-5), job(priority=7), job(priority=0), job(priority=7), job(priority=-5)
    )
    assert [j.id for j in store.pending(10)] == [high1.id, high2.id, mid.id, low1.id, low2.id]
    assert [j.id for j in store.pending(2)] == [high1.id, high2.id]
    assert store.pending(0) == []


def test_pending_from_an_offset(store: Store) -> None:
    low, _high1, high2 = submit(store, job(priority=-1), job(priority=3), job(priority=3))
    assert [j.id for j in store.pending(2, offset=1)] == [high2.id, low.id]
    assert store.pending(5, offset=3) == []


def test_pending_since_gives_each_new_or_retried_job_once(store: Store) -> None:
    a, b = submit(store, job(priority=0, max_retries=1), job(priority=0))
    first, cursor = store.pending_since(0, 100)
    assert [j.id for j in first] == [a.id, b.id]
    assert store.pending_since(cursor, 100) == ([], cursor)
    # a job decided "waiting" stays in the queue and does not come back
    assert store.commit(Plan(store.snapshot().version, waits={b.id: "waiting: no free capacity"}))
    assert store.pending_since(cursor, 100)[0] == []
    # new jobs in any tier, in queue order; then a retried job, which joins the queue again
    low, high = submit(store, job(priority=-2), job(priority=5))
    got, cursor2 = store.pending_since(cursor, 100)
    assert [j.id for j in got] == [high.id, low.id] and cursor2 > cursor
    place(store, a)
    store.update(JobUpdate(a.id, JobState.FAILED, T0 + 5, reason="oom", attempt=1, requeue=True))
    got, cursor3 = store.pending_since(cursor2, 100)
    assert [j.id for j in got] == [a.id] and cursor3 > cursor2
    assert [j.id for j in store.pending(10)] == [high.id, b.id, a.id, low.id]


def test_pending_since_over_limit_keeps_the_cursor(store: Store) -> None:
    a, b, c = submit(store, job(), job(priority=1), job())
    got, cursor = store.pending_since(0, 2)
    assert [j.id for j in got] == [b.id, a.id] and cursor == 0
    got, cursor = store.pending_since(cursor, 3)
    assert [j.id for j in got] == [b.id, a.id, c.id] and cursor > 0
    assert store.pending_since(cursor, 0) == ([], cursor)


def test_retried_job_rejoins_the_back_of_its_tier(store: Store) -> None:
    a, b = submit(store, job(max_retries=1), job())
    place(store, a)
    failed = store.update(JobUpdate(a.id, JobState.FAILED, T0 + 5, reason="oom", attempt=1, requeue=True))
    assert failed is not None and failed.state is JobState.PENDING and "retrying" in failed.reason
    assert [j.id for j in store.pending(10)] == [b.id, a.id]
    assert store.events(0, a.id)[-1].kind is EventKind.RETRYING


# ---------------------------------------------------------------------- commit


def test_commit_places_takes_capacity_and_records_allocation(store: Store) -> None:
    a, b = submit(store, job(gpus=8, single_node=True), job())
    before = free(store)
    snap = store.snapshot()
    p = placement(store, a)
    plan = Plan(snap.version, placements={a.id: p}, rejections={b.id: "no site could ever"})
    assert store.commit(plan)
    placed = store.get(a.id)
    assert placed is not None and placed.state is JobState.PLACED and placed.placement == p
    assert [(x.number, x.site, x.state) for x in placed.attempts] == [(1, "onprem-fra", JobState.PLACED)]
    rejected = store.get(b.id)
    assert rejected is not None and rejected.state is JobState.REJECTED and rejected.reason == "no site could ever"
    after = store.snapshot()
    assert after.version == snap.version + 1
    assert free(store) == before - 8 and after.allocations == {a.id: p}
    assert store.pending(10) == []
    assert [e.kind for e in store.events(0)] == [
        EventKind.SUBMITTED, EventKind.SUBMITTED, EventKind.PLACED, EventKind.REJECTED
    ]  # fmt: skip


def test_first_decision_time_is_kept(store: Store) -> None:
    a, b, c = submit(store, job(max_retries=1), job(), job())
    v = store.snapshot().version
    assert store.commit(
        Plan(v, waits={a.id: "waiting: no free capacity"}, rejections={b.id: "never"}, decided_at=T0 + 5)
    )
    waited, rej = store.get(a.id), store.get(b.id)
    assert waited is not None and waited.decided_at == T0 + 5
    assert rej is not None and rej.decided_at == rej.finished_at == rej.updated_at == T0 + 5
    assert [e.at for e in store.events(0) if e.kind in (EventKind.WAITING, EventKind.REJECTED)] == [T0 + 5, T0 + 5]
    snap = store.snapshot()
    p = placement(store, waited)
    assert store.commit(Plan(snap.version, placements={a.id: p, c.id: placement(store, c)}, decided_at=T0 + 9))
    assert store.get(a.id).decided_at == T0 + 5  # type: ignore[union-attr]
    assert store.get(c.id).decided_at == T0 + 9  # type: ignore[union-attr]


def test_stale_plan_is_refused_and_nothing_applied(store: Store) -> None:
    a, b = submit(store, job(), job())
    snap = store.snapshot()
    stale = Plan(snap.version, placements={b.id: placement(store, b)}, waits={a.id: "waiting: later"})
    place(store, a)  # someone else commits first: the version moves
    seq, before = store.last_seq(), free(store)
    assert not store.commit(stale)
    assert store.get(b.id).state is JobState.PENDING  # type: ignore[union-attr]
    assert store.last_seq() == seq and free(store) == before
    assert store.snapshot().version == snap.version + 1


def test_commit_of_a_job_no_longer_pending_is_refused(store: Store) -> None:
    a, b = submit(store, job(), job())
    store.update(JobUpdate(a.id, JobState.CANCELLED, T0 + 1, cancelled_by="alice"))
    snap = store.snapshot()  # current version: only a's state refuses the plan
    plan = Plan(snap.version, placements={a.id: placement(store, a), b.id: placement(store, b)})
    assert not store.commit(plan)
    assert store.get(b.id).state is JobState.PENDING  # type: ignore[union-attr]
    assert not store.commit(Plan(snap.version, rejections={"j-unknown": "x"}))


def test_waits_set_a_reason_once(store: Store) -> None:
    (a,) = submit(store, job())
    v = store.snapshot().version
    assert store.commit(Plan(v, waits={a.id: "waiting: no free capacity"}))
    assert store.commit(Plan(v, waits={a.id: "waiting: no free capacity"}))
    assert store.snapshot().version == v  # waiting does not invalidate other plans
    got = store.get(a.id)
    assert got is not None and got.reason == "waiting: no free capacity" and got.state is JobState.PENDING
    assert [e.kind for e in store.events(0, a.id)] == [EventKind.SUBMITTED, EventKind.WAITING]


def test_two_planners_on_one_snapshot_cannot_both_commit(store: Store) -> None:
    a, b = submit(store, job(gpus=8, single_node=True), job(gpus=8, single_node=True))
    snap = store.snapshot()
    pa, pb = placement(store, a), placement(store, b)
    assert pa.bindings == pb.bindings  # both planners chose the same free node
    assert store.commit(Plan(snap.version, placements={a.id: pa}))
    assert not store.commit(Plan(snap.version, placements={b.id: pb}))
    assert store.get(b.id).state is JobState.PENDING  # type: ignore[union-attr]


def test_concurrent_planners_never_oversubscribe(store: Store) -> None:
    """Four threads plan and commit against one store; the pool (64 GPUs) must never go below zero."""
    jobs = submit(store, *(job(gpus=8, single_node=True) for _ in range(12)))
    pool = store.catalog.pool_index["onprem-fra/a100"]  # type: ignore[attr-defined]
    model = store.catalog.pools[pool].gpu_model  # type: ignore[attr-defined]
    conflicts = [0]

    def planner(mine: list[Job]) -> None:
        for j in mine:
            for _ in range(50):
                snap = store.snapshot()
                bindings = snap.capacity.find(pool, Demand.of(j.spec))
                if bindings is None:
                    break
                p = Placement("onprem-fra", "a100", model, False, T0, T0 + 60, CostBreakdown(), 0.0, bindings)
                if store.commit(Plan(snap.version, placements={j.id: p})):
                    break
                conflicts[0] += 1

    threads = [threading.Thread(target=planner, args=(jobs[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = store.snapshot()
    placed = [j for j in store.get_many([j.id for j in jobs]) if j and j.state is JobState.PLACED]
    assert len(placed) == 8  # 8 nodes x 8 GPUs
    assert (snap.capacity.gpu_free[pool] >= 0).all() and snap.capacity.free_gpus(pool) == 0
    used = [(b.node, s) for j in placed for b in j.placement.bindings for s in b.gpu_slots]  # type: ignore[union-attr]
    assert len(used) == len(set(used)) == 64


# ---------------------------------------------------------------------- updates and capacity


def test_capacity_released_on_terminal_states_and_cancel(store: Store) -> None:
    a, b, c, d = submit(store, *(job(gpus=8, single_node=True) for _ in range(4)))
    full = free(store)
    place(store, a, b, c, d)
    assert free(store) == full - 32
    store.update(JobUpdate(a.id, JobState.RUNNING, T0 + 2, attempt=1))
    assert free(store) == full - 32  # running still holds its GPUs
    store.update(JobUpdate(a.id, JobState.SUCCEEDED, T0 + 3, exit_code=0, attempt=1))
    store.update(JobUpdate(b.id, JobState.FAILED, T0 + 3, exit_code=2, attempt=1))
    store.update(JobUpdate(c.id, JobState.CANCELLED, T0 + 3, cancelled_by="bob"))
    assert free(store) == full - 8
    assert set(store.snapshot().allocations) == {d.id}
    got = store.get(c.id)
    assert got is not None and got.cancelled_by == "bob" and got.attempts[-1].state is JobState.CANCELLED


def test_update_state_machine(store: Store) -> None:
    a, b = submit(store, job(max_retries=1), job())
    assert store.update(JobUpdate(a.id, JobState.RUNNING, T0)) is None  # not placed yet
    assert store.update(JobUpdate("j-nope", JobState.RUNNING, T0)) is None
    place(store, a)
    assert store.update(JobUpdate(a.id, JobState.RUNNING, T0 + 1, attempt=2)) is None  # no such attempt
    running = store.update(JobUpdate(a.id, JobState.RUNNING, T0 + 1, attempt=1))
    assert running is not None and running.state is JobState.RUNNING and running.started_at == T0 + 1
    assert store.update(JobUpdate(a.id, JobState.RUNNING, T0 + 2, attempt=1)) is None  # already running
    retried = store.update(JobUpdate(a.id, JobState.FAILED, T0 + 3, exit_code=1, attempt=1, requeue=True))
    assert retried is not None and retried.state is JobState.PENDING and retried.placement is None
    place(store, retried)
    # news about attempt 1 arrives late: ignored
    assert store.update(JobUpdate(a.id, JobState.SUCCEEDED, T0 + 4, exit_code=0, attempt=1)) is None
    done = store.update(JobUpdate(a.id, JobState.SUCCEEDED, T0 + 5, exit_code=0, log_tail="ok", attempt=2))
    assert done is not None and done.state is JobState.SUCCEEDED and done.log_tail == "ok"
    assert [x.state for x in done.attempts] == [JobState.FAILED, JobState.SUCCEEDED]
    assert store.update(JobUpdate(a.id, JobState.CANCELLED, T0 + 6)) is None  # terminal stays terminal
    cancelled = store.update(JobUpdate(b.id, JobState.CANCELLED, T0 + 6, cancelled_by="eve"))
    assert cancelled is not None and cancelled.state is JobState.CANCELLED and store.pending(10) == []
    assert store.get(a.id) == done


def test_update_many_applies_in_order(store: Store) -> None:
    a, b = submit(store, job(), job())
    place(store, a, b)
    out = store.update_many(
        [
            JobUpdate(a.id, JobState.RUNNING, T0 + 1, attempt=1),
            JobUpdate(b.id, JobState.RUNNING, T0 + 1, attempt=1),
            JobUpdate(a.id, JobState.SUCCEEDED, T0 + 2, exit_code=0, attempt=1),
            JobUpdate(a.id, JobState.FAILED, T0 + 3, exit_code=1, attempt=1),  # after success: ignored
        ]
    )
    assert [None if j is None else j.state for j in out] == [
        JobState.RUNNING, JobState.RUNNING, JobState.SUCCEEDED, None
    ]  # fmt: skip
    assert store.get(a.id).state is JobState.SUCCEEDED  # type: ignore[union-attr]
    assert [e.kind for e in store.events(0, a.id)] == [
        EventKind.SUBMITTED, EventKind.PLACED, EventKind.RUNNING, EventKind.SUCCEEDED
    ]  # fmt: skip


def test_service_health_is_news_not_a_state_change(store: Store) -> None:
    (svc,) = submit(store, job(kind=JobKind.INFERENCE, runtime_s=0.0, inference=InferenceSpec(replicas=2)))
    place(store, svc)
    store.update(JobUpdate(svc.id, JobState.RUNNING, T0 + 1, attempt=1))
    version = store.snapshot().version
    news = JobUpdate(
        svc.id, JobState.RUNNING, T0 + 2, attempt=1, health="healthy", endpoint="a:1,b:2", replicas_ready=2
    )
    up = store.update(news)
    assert up is not None and up.state is JobState.RUNNING and up.updated_at == T0 + 2
    assert (up.health, up.endpoint, up.replicas_ready) == ("healthy", "a:1,b:2", 2)
    assert store.get(svc.id) == up
    assert store.update(news) is None  # nothing new: no event
    assert store.update(JobUpdate(svc.id, JobState.RUNNING, T0 + 3, attempt=0, health="degraded")) is None
    assert store.snapshot().version == version  # plans made meanwhile stay valid
    last = store.events(0, svc.id)[-1]
    assert last.kind is EventKind.HEALTH and last.job == up
    ended = store.update(JobUpdate(svc.id, JobState.CANCELLED, T0 + 4, cancelled_by="ops"))
    assert ended is not None and (ended.health, ended.endpoint, ended.replicas_ready) == ("", "", 0)


def test_state_changes_move_the_version(store: Store) -> None:
    a, b = submit(store, job(), job())
    place(store, a)
    snap = store.snapshot()
    store.update(JobUpdate(a.id, JobState.RUNNING, T0 + 1, attempt=1))
    assert not store.commit(Plan(snap.version, placements={b.id: placement(store, b)}))
    assert store.snapshot().version == snap.version + 1


def test_counts(store: Store) -> None:
    assert store.counts() == dict.fromkeys(JobState, 0)
    a, b, _ = submit(store, job(), job(), job())
    place(store, a)
    store.update(JobUpdate(b.id, JobState.CANCELLED, T0))
    counts = store.counts()
    assert counts[JobState.PENDING] == 1 and counts[JobState.PLACED] == 1 and counts[JobState.CANCELLED] == 1
    assert sum(counts.values()) == 3 and set(counts) == set(JobState)


# ---------------------------------------------------------------------- replicas


def test_replicas_with_expiry(store: Store) -> None:
    v = store.snapshot().version
    assert store.commit(Plan(v, new_replicas={"imagenet-21k": ("aws-us-east-1",)}, replica_expires_at=T0 + 100))
    assert store.snapshot().replicas == {"imagenet-21k": {"aws-us-east-1": T0 + 100}}
    assert store.commit(
        Plan(v, new_replicas={"imagenet-21k": ("aws-us-east-1", "gcp-us-central1")}, replica_expires_at=T0 + 50)
    )
    assert store.snapshot().replicas == {"imagenet-21k": {"aws-us-east-1": T0 + 100, "gcp-us-central1": T0 + 50}}
    assert store.commit(Plan(v, new_replicas={"imagenet-21k": ("aws-us-east-1",)}, replica_expires_at=T0 + 500))
    assert store.snapshot().replicas["imagenet-21k"]["aws-us-east-1"] == T0 + 500


# ---------------------------------------------------------------------- events


def test_events_have_increasing_seq_and_filter_by_job(store: Store) -> None:
    a, b = submit(store, job(), job())
    place(store, a)
    events = store.events(0)
    assert [e.seq for e in events] == [1, 2, 3] and store.last_seq() == 3
    assert [(e.kind, e.job.id) for e in events] == [
        (EventKind.SUBMITTED, a.id), (EventKind.SUBMITTED, b.id), (EventKind.PLACED, a.id)
    ]  # fmt: skip
    assert events[2].job == store.get(a.id) and events[2].at == T0 + 1
    assert [e.seq for e in store.events(1)] == [2, 3]
    assert [e.seq for e in store.events(0, a.id)] == [1, 3]
    assert [e.seq for e in store.events(1, a.id)] == [3]
    assert store.events(3) == [] and store.events(0, "j-nope") == []


def test_events_wait_until_timeout_or_news(store: Store) -> None:
    (a,) = submit(store, job())
    last = store.last_seq()
    began = time.monotonic()
    assert store.events(last, timeout_s=0.3) == []
    assert 0.25 <= time.monotonic() - began < 2.0
    later = job()
    writer = threading.Timer(0.2, lambda: store.submit([later]))
    writer.start()
    began = time.monotonic()
    got = store.events(last, timeout_s=5.0)
    writer.join()
    assert [e.job.id for e in got] == [later.id] and time.monotonic() - began < 2.0
    last = store.last_seq()
    writer = threading.Timer(0.2, lambda: store.update(JobUpdate(a.id, JobState.CANCELLED, T0)))
    writer.start()
    got = store.events(last, a.id, timeout_s=5.0)
    writer.join()  # its reply is read before the store closes
    assert [e.kind for e in got] == [EventKind.CANCELLED]


# ---------------------------------------------------------------------- listing


def test_list_jobs_filters(store: Store) -> None:
    a, b, c, d = submit(
        store,
        job(tags={"team": "vision", "project": "p1"}),
        job(tags={"team": "nlp"}),
        job(tags={"team": "vision", "project": "p2"}),
        job(),
    )
    place(store, a)
    place(store, c, pool_key="aws-us-east-1/p5")

    def ids(**kw: object) -> list[str]:
        return [j.id for j in store.list_jobs(JobQuery(**kw))[0]]  # type: ignore[arg-type]

    assert ids() == [d.id, c.id, b.id, a.id]  # newest first
    assert ids(states=frozenset({JobState.PLACED})) == [c.id, a.id]
    assert ids(states=frozenset({JobState.PENDING, JobState.PLACED})) == [d.id, c.id, b.id, a.id]
    assert ids(site="onprem-fra") == [a.id]
    assert ids(tags={"team": "vision"}) == [c.id, a.id]
    assert ids(tags={"team": "vision", "project": "p2"}) == [c.id]
    assert ids(states=frozenset({JobState.RUNNING})) == []


def test_list_jobs_pages(store: Store) -> None:
    jobs = submit(store, *(job(tags={"k": "even" if i % 2 == 0 else "odd"}) for i in range(25)))
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page, token = store.list_jobs(JobQuery(page_size=10, page_token=token))
        seen += [j.id for j in page]
        pages += 1
        if not token:
            break
    assert seen == [j.id for j in reversed(jobs)] and pages == 3
    evens, token = store.list_jobs(JobQuery(tags={"k": "even"}, page_size=13))
    assert len(evens) == 13 and token  # a full page always offers a next one, which may be empty
    assert store.list_jobs(JobQuery(tags={"k": "even"}, page_size=13, page_token=token)) == ([], "")
    first, token = store.list_jobs(JobQuery(tags={"k": "even"}, page_size=5))
    second, _ = store.list_jobs(JobQuery(tags={"k": "even"}, page_size=5, page_token=token))
    assert [j.id for j in first + second] == [j.id for j in reversed(jobs[::2])][:10]


# ---------------------------------------------------------------------- leadership and fencing


def test_leader_lease_and_epochs(store: Store) -> None:
    e1 = store.acquire_lease("a", 30.0)
    assert e1 > 0
    assert store.acquire_lease("b", 30.0) == 0
    assert store.acquire_lease("a", 30.0) == e1  # renewal keeps the epoch
    store.release_lease("b")  # not the holder: no effect
    assert store.acquire_lease("b", 30.0) == 0
    store.release_lease("a")
    e2 = store.acquire_lease("b", 0.3)
    assert e2 > e1
    time.sleep(0.5)  # b's lease expires
    e3 = store.acquire_lease("a", 30.0)
    assert e3 > e2


def test_fencing_refuses_a_deposed_leaders_commit(store: Store) -> None:
    a, b = submit(store, job(), job())
    old = store.acquire_lease("old", 0.3)
    snap = store.snapshot()
    assert not store.commit(Plan(snap.version, placements={a.id: placement(store, a)}))  # epoch 0 while led
    time.sleep(0.5)
    new = store.acquire_lease("new", 30.0)
    assert new > old
    assert not store.commit(Plan(snap.version, placements={a.id: placement(store, a)}, epoch=old))
    assert store.get(a.id).state is JobState.PENDING  # type: ignore[union-attr]
    assert store.commit(Plan(snap.version, placements={b.id: placement(store, b)}, epoch=new))


def test_launch_claims(store: Store) -> None:
    a, b, c = submit(store, job(), job(), job())
    place(store, a, b)  # no lease held: epoch 0 may act
    store.update(JobUpdate(b.id, JobState.CANCELLED, T0 + 2))
    e1 = store.acquire_lease("one", 0.3)
    got = store.claim_launches(e1, [(a.id, 1), (b.id, 1), (c.id, 1), (a.id, 2), ("j-nope", 1)])
    assert [x.verdict for x in got] == [
        ClaimVerdict.LAUNCH, ClaimVerdict.NOT_PLACED, ClaimVerdict.NOT_PLACED,
        ClaimVerdict.NOT_PLACED, ClaimVerdict.NOT_PLACED,
    ]  # fmt: skip
    assert got[0].job == store.get(a.id) and got[0].claimed_epoch == e1
    again = store.claim_launches(e1, [(a.id, 1)])[0]
    assert again.verdict is ClaimVerdict.LAUNCH  # the same leader may retry: launch is idempotent
    assert store.claim_launches(0, [(a.id, 1)])[0].verdict is ClaimVerdict.FENCED
    time.sleep(0.5)
    assert store.claim_launches(e1, [(a.id, 1)])[0].verdict is ClaimVerdict.FENCED  # lease lapsed
    e2 = store.acquire_lease("two", 30.0)
    assert store.claim_launches(e1, [(a.id, 1)])[0].verdict is ClaimVerdict.FENCED
    taken = store.claim_launches(e2, [(a.id, 1)])[0]
    assert taken.verdict is ClaimVerdict.CLAIMED and taken.claimed_epoch == e1 and taken.job is not None
