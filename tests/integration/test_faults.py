"""Fault tests: real Gravity server processes on real Redis, killed, paused and cut off.

Bounded in time (every wait has a deadline). Marked `redis` and `slow`; they FAIL, never skip,
when Redis is unreachable. Run them alone with `pytest -m slow tests/integration/test_faults.py`.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from gravity.v1 import scheduler_pb2 as pb
from placers.catalog import Catalog
from placers.domain import JobState
from placers.registry import make_placer
from scheduler.clock import WallClock
from scheduler.executors.sim import SimExecutor
from scheduler.service import SchedulerService
from scheduler.settings import CycleSettings
from scheduler.store.base import JobQuery, JobUpdate
from scheduler.store.redis import RedisStore
from tests.conftest import spec
from tests.integration.harness import (
    GravityProc,
    RedisServer,
    Submitter,
    free_port,
    job_spec,
    leader_pid,
    read_journals,
)
from tests.redis_support import REDIS_URL, fresh_redis

pytestmark = [pytest.mark.redis, pytest.mark.slow]

LEASE_TTL_S = 1.0


def check_every_acked_job_once_and_terminal(sub: Submitter, n: int, timeout_s: float) -> Counter[str]:
    jobs = sub.wait_all_terminal(n, timeout_s)
    by_request = Counter(j.spec.request_id for j in jobs)
    assert len(jobs) == n, f"{len(jobs)} jobs stored for {n} submissions"
    assert all(c == 1 for c in by_request.values()), [r for r, c in by_request.items() if c > 1][:5]
    ids = {j.spec.request_id: j.id for j in jobs}
    lost = {r: i for r, i in sub.acked.items() if ids.get(r) != i}
    assert not lost, f"acknowledged jobs missing or changed: {list(lost.items())[:5]}"
    assert len(sub.acked) == n
    return Counter(pb.JobState.Name(j.state) for j in jobs)


def check_launches(journals: list[Path], client=None, prefix: str = "") -> int:  # type: ignore[no-untyped-def]
    """No launch id launched twice; with `client`, the claims Redis granted (the launch log, oldest
    first) never go back to an older epoch once a newer one claimed. (A launch's executor call
    follows its claim, so a leader paused between the two launches late, after a newer leader
    started: that launch was claimed while its epoch led and is never a second copy.)"""
    launches = read_journals(journals)
    counts = Counter(lid for lid, *_ in launches)
    doubles = [lid for lid, c in counts.items() if c > 1]
    assert not doubles, f"launched twice: {doubles[:5]}"
    if client is not None:
        from scheduler.store.keys import Keys

        newest = 0
        for row in client.lrange(Keys(prefix).launch_log, 0, -1):
            launch, epoch_text, _ = row.split(" ")
            epoch = int(epoch_text)
            assert epoch >= newest, f"{launch} claimed at epoch {epoch} after epoch {newest} claimed"
            newest = epoch
    return len(launches)


def test_kill9_scheduler_during_2000_submissions(tmp_path: Path) -> None:
    """kill -9 at random moments while 2,000 jobs are submitted; every acknowledged job exists once and ends."""
    fresh_redis().close()
    n = 2000
    proc = GravityProc(tmp_path, "s", free_port(), REDIS_URL, "ft-kill", LEASE_TTL_S)
    sub = Submitter([proc.address], timeout_s=3.0)
    try:
        proc.start()
        proc.wait_ready()
        feeder = sub.run([job_spec(i) for i in range(n)], threads=4, budget_s=150)
        # three kills at random points of the stream: somewhere in 5-30 %, 35-60 % and 65-90 % acknowledged
        rng = random.Random()
        kills = 0
        for low, high in ((0.05, 0.30), (0.35, 0.60), (0.65, 0.90)):
            at = rng.uniform(low, high) * n
            while len(sub.acked) < at and feeder.is_alive():
                time.sleep(0.002)
            proc.kill9()
            kills += 1
            proc.start()
            proc.wait_ready()
        feeder.join(150)
        assert not feeder.is_alive() and not sub.errors, sub.errors[:3]
        states = check_every_acked_job_once_and_terminal(sub, n, timeout_s=120)
        launched = check_launches(proc.journals())
        print(f"kills={kills} retries={sub.retries} states={dict(states)} launches={launched}")
    finally:
        sub.close()
        proc.stop()


def test_sigstop_leader_failover_no_double_launch(tmp_path: Path) -> None:
    """Pause the leader past its lease: the follower takes over within ttl + a renewal; the old
    leader, resumed, launches nothing (journals of both processes: no launch twice, epochs in order)."""
    client = fresh_redis()
    prefix = "ft-stop"
    a = GravityProc(tmp_path, "a", free_port(), REDIS_URL, prefix, LEASE_TTL_S)
    b = GravityProc(tmp_path, "b", free_port(), REDIS_URL, prefix, LEASE_TTL_S)
    procs = {}
    sub = Submitter([a.address, b.address], timeout_s=2.0)
    n = 1200
    try:
        for p in (a, b):
            p.start()
        for p in (a, b):
            p.wait_ready()
            procs[p.pid] = p
        feeder = sub.run([job_spec(i) for i in range(n)], threads=4, budget_s=150)
        failovers = []
        for _ in range(3):
            time.sleep(1.0)
            pid = leader_pid(client, prefix)
            assert pid in procs, f"leader pid {pid} is not one of ours {list(procs)}"
            old, new = procs[pid], next(p for q, p in procs.items() if q != pid)
            stopped = time.monotonic()
            old.signal(signal.SIGSTOP)
            while leader_pid(client, prefix) != new.pid:
                assert time.monotonic() - stopped < 4 * LEASE_TTL_S, "no failover"
                time.sleep(0.02)
            failovers.append(time.monotonic() - stopped)
            time.sleep(max(0.0, stopped + 2.5 * LEASE_TTL_S - time.monotonic()))
            old.signal(signal.SIGCONT)
        feeder.join(150)
        assert not feeder.is_alive() and not sub.errors, sub.errors[:3]
        states = check_every_acked_job_once_and_terminal(sub, n, timeout_s=120)
        journals = a.journals() + b.journals()
        launched = check_launches(journals, client, prefix)
        # Every launch the executors performed was claimed in Redis first, at the same epoch.
        claims = _launch_log(client, prefix)
        for launch_id, epoch, _, _ in read_journals(journals):
            assert claims.get(launch_id) == epoch, (
                f"{launch_id} launched at epoch {epoch}, claimed at {claims.get(launch_id)}"
            )
        # lease ttl + a follower's retry interval (ttl/10), with slack for a loaded 2-core machine
        assert max(failovers) < LEASE_TTL_S * 1.1 + 1.0, failovers
        print(f"failovers_s={[round(f, 2) for f in failovers]} states={dict(states)} launches={launched}")
    finally:
        sub.close()
        for p in (a, b):
            p.stop()


def _launch_log(client, prefix: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    from scheduler.store.keys import Keys

    out = {}
    for row in client.lrange(Keys(prefix).launch_log, 0, -1):
        launch, epoch, _ = row.split(" ")
        job_id, _, attempt = launch.rpartition("#")
        out[f"{job_id}-a{attempt}"] = int(epoch)
    return out


def test_redis_restart_during_load(tmp_path: Path) -> None:
    """kill -9 a private AOF Redis mid-stream: UNAVAILABLE meanwhile, then recovery, no acknowledged job lost."""
    fresh_redis().close()  # fail, not skip, without the shared Redis too
    server = RedisServer(tmp_path)
    server.start()
    proc = GravityProc(tmp_path, "s", free_port(), server.url, "ft-redis", LEASE_TTL_S)
    sub = Submitter([proc.address], timeout_s=3.0)
    n = 1000
    try:
        proc.start()
        proc.wait_ready()
        feeder = sub.run([job_spec(i) for i in range(n)], threads=2, budget_s=150)
        while len(sub.acked) < n // 3 and feeder.is_alive():
            time.sleep(0.05)
        acked_before = dict(sub.acked)
        unavailable_before = sub.retries["UNAVAILABLE"]
        server.kill9()
        time.sleep(2.0)
        unavailable_during = sub.retries["UNAVAILABLE"] - unavailable_before
        server.start()
        feeder.join(150)
        assert not feeder.is_alive() and not sub.errors, sub.errors[:3]
        assert unavailable_during > 0, "no UNAVAILABLE answer while Redis was down"
        states = check_every_acked_job_once_and_terminal(sub, n, timeout_s=120)
        assert all(sub.acked[r] == i for r, i in acked_before.items())
        print(f"acked_before_kill={len(acked_before)} unavailable={unavailable_during} states={dict(states)}")
    finally:
        sub.close()
        proc.stop()
        server.stop()


def test_concurrent_planners_on_a_nearly_full_site(catalog: Catalog) -> None:
    """Two SchedulerService instances plan against one Redis at full speed while jobs are cancelled
    under them: the pool is never oversubscribed (checked from a third store, and from the jobs)."""
    fresh_redis().close()
    pool_key = "onprem-fra/a100"
    pool = catalog.pool_index[pool_key]
    model = catalog.pools[pool].gpu_model
    clock = WallClock()
    stores = [RedisStore(catalog, REDIS_URL, key_prefix="ft-plan") for _ in range(3)]
    services = [
        SchedulerService(
            catalog, s, SimExecutor(clock, catalog), make_placer("greedy"), clock, CycleSettings(retry_waiting_s=0.01)
        )
        for s in stores[:2]
    ]
    refused = [0, 0]
    for i, svc in enumerate(services):
        commit = svc.store.commit

        def counting(plan, commit=commit, i=i):  # type: ignore[no-untyped-def]
            ok = commit(plan)
            refused[i] += not ok
            return ok

        svc.store.commit = counting  # type: ignore[method-assign]
    here = {"allowed_sites": ("onprem-fra",), "gpu_models": (model,), "runtime_s": 86400.0}
    # nearly full: 56 of 64 GPUs taken by long jobs
    services[0].submit([spec(gpus=8, single_node=True, **here) for _ in range(7)])
    services[0].run_cycle()
    assert stores[2].snapshot().capacity.free_gpus(pool) == 8
    sizes = [1, 2, 4, 8]
    for k in range(2):
        services[k].submit([spec(gpus=sizes[i % 4], single_node=True, **here) for i in range(30)])
    stop = threading.Event()
    problems: list[str] = []

    def plan_loop(svc: SchedulerService) -> None:
        while not stop.is_set():
            svc.run_cycle()

    def cancel_loop() -> None:
        rng = random.Random(7)
        while not stop.is_set():
            time.sleep(0.05)
            held, _ = stores[2].list_jobs(JobQuery(states=frozenset({JobState.PLACED, JobState.RUNNING})))
            if held:
                victim = rng.choice(held)
                stores[2].update(JobUpdate(victim.id, JobState.CANCELLED, clock.now(), cancelled_by="chaos"))

    def observe() -> None:
        while not stop.is_set():
            snap = stores[2].snapshot()
            if (snap.capacity.gpu_free[pool] < 0).any():
                problems.append(f"negative free capacity at version {snap.version}")
            slots: Counter[tuple[int, int]] = Counter()
            for p in snap.allocations.values():
                if f"{p.site}/{p.pool}" == pool_key:
                    for b in p.bindings:
                        for s in b.gpu_slots:
                            slots[(b.node, s)] += b.gpu_milli
            if any(m > 1000 for m in slots.values()):
                problems.append(f"a GPU slot given twice at version {snap.version}")
            held, _ = stores[2].list_jobs(
                JobQuery(states=frozenset({JobState.PLACED, JobState.RUNNING}), site="onprem-fra", page_size=1000)
            )
            if sum(j.spec.gpus for j in held) > 64:
                problems.append(f"{sum(j.spec.gpus for j in held)} GPUs held in a 64-GPU pool")
            time.sleep(0.01)

    threads = [threading.Thread(target=plan_loop, args=(s,)) for s in services]
    threads += [threading.Thread(target=cancel_loop), threading.Thread(target=observe)]
    for t in threads:
        t.start()
    time.sleep(6.0)
    stop.set()
    for t in threads:
        t.join(30)
    placed = sum(1 for e in stores[2].events(0) if e.kind.value == "placed")
    for s in stores:
        s.close()
    assert not problems, problems[:5]
    assert placed > 7 + 10, f"only {placed} placements: the planners did not compete"
    assert sum(refused) > 0, "no commit was ever refused: the planners never raced"
    print(f"placements={placed} refused_commits={refused}")
