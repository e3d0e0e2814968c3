"""What only the Redis store has: state that outlives the process, schema versions, outages,
the incremental capacity mirror, key layout and round trips. Marked `redis`: fails without Redis."""

from __future__ import annotations

import json
import time

import grpc
import pytest

from gravity.v1 import scheduler_pb2 as pb
from gravity.v1 import scheduler_pb2_grpc as pb_grpc
from placers.catalog import Catalog
from placers.domain import Job, JobState
from placers.registry import make_placer
from scheduler import app
from scheduler.api.server import Server
from scheduler.clock import ManualClock
from scheduler.executors.sim import SimExecutor
from scheduler.service import SchedulerService
from scheduler.settings import CycleSettings
from scheduler.store import redis as redis_store
from scheduler.store.base import JobUpdate, SchemaError, StoreError
from scheduler.store.keys import Keys
from scheduler.store.redis import RedisStore
from tests.conftest import spec
from tests.redis_support import REDIS_URL, fresh_redis

pytestmark = pytest.mark.redis


def service(store: RedisStore, catalog: Catalog, clock: ManualClock) -> SchedulerService:
    return SchedulerService(catalog, store, SimExecutor(clock, catalog), make_placer("greedy"), clock, CycleSettings())


def test_state_and_idempotency_survive_a_restart(catalog: Catalog, clock: ManualClock) -> None:
    fresh_redis().close()
    first = service(RedisStore(catalog, REDIS_URL), catalog, clock)
    ((job, created),) = first.submit([spec(request_id="train-42", runtime_s=600)])
    first.run_cycle()
    first.store.close()
    again = service(RedisStore(catalog, REDIS_URL), catalog, clock)  # a new process
    ((same, created_again),) = again.submit([spec(request_id="train-42", name="resubmitted")])
    assert created and not created_again and same.id == job.id and same.spec.name == "job"
    assert again.get(job.id).state is JobState.PLACED
    assert [e.kind.value for e in again.events(0, job.id)] == ["submitted", "placed"]


def test_incremental_mirror_matches_a_full_reload(catalog: Catalog, clock: ManualClock, monkeypatch) -> None:
    fresh_redis().close()
    a, b = (service(RedisStore(catalog, REDIS_URL), catalog, clock) for _ in range(2))
    pool = catalog.pool_index["onprem-sjc/h100"]

    def same_as_fresh(store: RedisStore) -> None:
        mine, fresh = store.snapshot(), RedisStore(catalog, REDIS_URL).snapshot()
        assert mine.version == fresh.version and mine.allocations == fresh.allocations
        for x, y in zip(mine.capacity.gpu_free, fresh.capacity.gpu_free, strict=True):
            assert (x == y).all()
        assert (mine.capacity.elastic_free == fresh.capacity.elastic_free).all()

    for round_ in range(4):
        a.submit([spec(gpus=g, runtime_s=100 + 50 * round_) for g in (1, 2, 4, 8)])
        b.submit([spec(gpus=3, allowed_sites=("aws-us-east-1",), runtime_s=120)])
        a.run_cycle()
        b.run_cycle()
        same_as_fresh(a.store)  # type: ignore[arg-type]
        same_as_fresh(b.store)  # type: ignore[arg-type]
        clock.advance(130)
        b.run_cycle()  # b applies completions of b's launches; a's stay running in a's executor
        victims = [j for j in a.list_jobs(redis_store.JobQuery())[0] if j.state.holds_capacity][:2]
        for v in victims:
            a.cancel(v.id)
    same_as_fresh(a.store)  # type: ignore[arg-type]
    assert a.store.snapshot().capacity.free_gpus(pool) < 128
    # A mirror further behind than the allocation log reaches reloads everything.
    monkeypatch.setattr(redis_store, "ALLOC_LOG_KEEP", 2)
    behind = RedisStore(catalog, REDIS_URL)
    behind.snapshot()
    for j in [j for j in a.list_jobs(redis_store.JobQuery())[0] if j.state.holds_capacity][:5]:
        a.cancel(j.id)
    same_as_fresh(behind)
    assert behind.round_trips_by_call.get("snapshot (full)") == 2


def test_unknown_schema_version_is_a_clear_error(catalog: Catalog) -> None:
    client = fresh_redis()
    store = RedisStore(catalog, REDIS_URL)
    ((job, _),) = store.submit([Job("j-1", spec(), JobState.PENDING, 1.0, 1.0)])
    keys = Keys()
    record = json.loads(client.hget(keys.jobs, job.id))
    record["v"] = 99
    client.hset(keys.jobs, job.id, json.dumps(record))
    with pytest.raises(SchemaError, match=r"job j-1 .*schema version 99; this Gravity reads version 1"):
        RedisStore(catalog, REDIS_URL).get(job.id)
    client.set(keys.schema, 7)
    with pytest.raises(SchemaError, match=r"holds schema version '7'.*another key prefix"):
        RedisStore(catalog, REDIS_URL).check()
    with pytest.raises(app.ConfigError, match="schema version '7'"):
        app.make_store(REDIS_URL, catalog)
    other = RedisStore(catalog, REDIS_URL, key_prefix="elsewhere")  # another prefix is another store
    other.check()
    assert other.get(job.id) is None


def test_unreachable_redis_is_store_error_and_unavailable(catalog: Catalog, clock: ManualClock) -> None:
    fresh_redis().close()  # this test needs no Redis, but the suite's rule holds: redis tests need Redis
    down = RedisStore(catalog, "redis://127.0.0.1:1/0", connect_timeout_s=0.5)
    with pytest.raises(StoreError, match="unavailable"):
        down.submit([Job("j-1", spec(), JobState.PENDING, 1.0, 1.0)])
    with pytest.raises(StoreError):
        down.snapshot()
    store = app.make_store("redis://127.0.0.1:1/0", catalog)  # starts anyway, answers UNAVAILABLE
    server = Server(service(store, catalog, clock), "127.0.0.1:0")  # type: ignore[arg-type]
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub = pb_grpc.SchedulerStub(ch)
            spec_pb = pb.JobSpec(name="x", kind=pb.JOB_KIND_BATCH, gpus=1, entrypoint="true", runtime_s=60)
            with pytest.raises(grpc.RpcError) as err:
                stub.SubmitJob(pb.SubmitJobRequest(spec=spec_pb), timeout=10)
            assert err.value.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
            assert "retry" in err.value.details()  # type: ignore[attr-defined]
    finally:
        server.stop(0)


def test_every_key_is_under_the_prefix(catalog: Catalog, clock: ManualClock) -> None:
    client = fresh_redis()
    store = RedisStore(catalog, REDIS_URL, key_prefix="team-a")
    svc = service(store, catalog, clock)
    svc.submit([spec(request_id="r1", runtime_s=10, datasets=("imagenet-21k",), allowed_sites=("aws-us-east-1",))])
    svc.store.acquire_lease("me", 5.0)
    svc.epoch = lambda: 1
    svc.run_cycle()
    clock.advance(20)
    svc.run_cycle()
    svc.run_cycle()
    keys = set(client.keys("*"))
    assert keys and all(k.startswith("{team-a}:") for k in keys), keys
    assert keys <= set(Keys("team-a").all())
    assert store.wipe() == len(keys) and client.keys("*") == []


def test_round_trips_per_cycle_do_not_grow_with_the_batch(catalog: Catalog, clock: ManualClock) -> None:
    fresh_redis().close()
    store = RedisStore(catalog, REDIS_URL)
    svc = service(store, catalog, clock)
    per_cycle = []
    for n in (20, 400):
        svc.submit([spec(runtime_s=30) for _ in range(n)])
        before = store.round_trips
        report = svc.run_cycle()  # take, snapshot, place, commit, claim + launch
        assert report.placed == n
        clock.advance(5)
        svc.run_cycle()  # ... and the next cycle stores n "running" events
        per_cycle.append(store.round_trips - before)
    print("round trips per two cycles", per_cycle)
    assert per_cycle[0] == per_cycle[1] <= 16, per_cycle


def test_events_wait_across_instances(catalog: Catalog) -> None:
    fresh_redis().close()
    watcher, writer = RedisStore(catalog, REDIS_URL), RedisStore(catalog, REDIS_URL)
    ((job, _),) = writer.submit([Job("j-1", spec(), JobState.PENDING, 1.0, 1.0)])
    last = watcher.last_seq()
    began = time.monotonic()
    assert watcher.events(last, job.id, timeout_s=0.4) == []
    assert time.monotonic() - began >= 0.35
    writer.update(JobUpdate(job.id, JobState.CANCELLED, 2.0))
    got = watcher.events(last, job.id, timeout_s=2.0)
    assert [e.job.state for e in got] == [JobState.CANCELLED] and got[0].job.spec == job.spec


def test_big_submissions_survive_a_script_cache_flush(catalog: Catalog, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A submission of several script chunks in one pipeline, before and after Redis forgot its
    scripts (as after a restart): NOSCRIPT is answered by loading them again, nothing is lost."""
    import redis as redis_client

    from tests.integration.harness import RedisServer

    fresh_redis().close()
    server = RedisServer(tmp_path)  # a private server: SCRIPT FLUSH must not touch the shared one
    server.start()
    try:
        store = RedisStore(catalog, server.url)
        n = redis_store.SUBMIT_CHUNK * 2 + 500
        first = store.submit([Job(f"j-a{i}", spec(request_id=f"a{i}"), JobState.PENDING, 1.0, 1.0) for i in range(n)])
        redis_client.Redis(port=server.port).script_flush()
        second = store.submit([Job(f"j-b{i}", spec(request_id=f"b{i}"), JobState.PENDING, 1.0, 1.0) for i in range(n)])
        again = store.submit([Job(f"j-c{i}", spec(request_id=f"a{i}"), JobState.PENDING, 1.0, 1.0) for i in range(n)])
        assert all(c for _, c in first) and all(c for _, c in second)
        assert [j.id for j, c in again if not c] == [j.id for j, _ in first]
        assert store.counts()[JobState.PENDING] == 2 * n
        # a fresh server knows no script either: each of the first two costs a NOSCRIPT, a load, a resend
        assert store.round_trips_by_call["submit"] == 3 + 3 + 1
        store.close()
    finally:
        server.stop()
