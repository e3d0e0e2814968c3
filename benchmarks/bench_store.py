"""Submit-to-decision with the Redis store against the memory store, measured in the same run.

    python benchmarks/bench_store.py [--jobs 4000] [--batch 100] [--runs 3] [--redis-url URL]

For each store the production scheduling loop (SchedulerService.start, the sim executor on the
wall clock, jobs finishing after ~0.1 s so capacity keeps turning over) decides `--jobs` jobs
submitted in batches of `--batch` as fast as the store accepts them. A job is decided when the
plan that places it, leaves it waiting with a reason, or rejects it has been committed.

Prints, per store, the median over `--runs` of: throughput (jobs decided per second, first submit
to last decision), submit-to-decision latency p50/p99 (from the moment `submit` returned, i.e. the
job was acknowledged), and for Redis the round trips per job decided, counted by the store itself
(every request it sends: the scheduling loop's and the submitter's) with the split by call. Ratios are Redis / memory.

Redis: --redis-url, else $GRAVITY_BENCH_REDIS_URL, else $GRAVITY_TEST_REDIS_URL, else
redis://127.0.0.1:6379/15. Keys live under a fresh prefix, deleted afterwards (no FLUSHDB).
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "proto")]

from placers.catalog import Catalog, load_catalog  # noqa: E402
from placers.domain import JobKind, JobSpec  # noqa: E402
from placers.registry import make_placer  # noqa: E402
from scheduler.clock import WallClock  # noqa: E402
from scheduler.executors.sim import SimExecutor  # noqa: E402
from scheduler.service import SchedulerService  # noqa: E402
from scheduler.settings import CycleSettings  # noqa: E402
from scheduler.store.base import Plan, Store  # noqa: E402
from scheduler.store.memory import MemoryStore  # noqa: E402
from scheduler.store.redis import RedisStore  # noqa: E402


@dataclass
class Run:
    store: str
    jobs: int
    throughput_jobs_s: float
    p50_ms: float
    p99_ms: float
    round_trips_per_job: float | None = None
    by_call: Counter[str] = field(default_factory=Counter)


def one_run(kind: str, catalog: Catalog, url: str, n: int, batch: int) -> Run:
    prefix = f"bench-{secrets.token_hex(4)}"
    store: Store = MemoryStore(catalog) if kind == "memory" else RedisStore(catalog, url, key_prefix=prefix)
    clock = WallClock()
    svc = SchedulerService(
        catalog, store, SimExecutor(clock, catalog, speedup=600.0), make_placer("greedy"), clock, CycleSettings()
    )
    specs = [
        JobSpec(name=f"bench-{i}", kind=JobKind.BATCH, gpus=1, entrypoint="true", runtime_s=60.0) for i in range(n)
    ]
    submitted_at: dict[str, float] = {}
    decided_at: dict[str, float] = {}
    done = threading.Event()
    commit = store.commit

    def stamped_commit(plan: Plan) -> bool:
        """The store's commit; a job is decided when a plan deciding it (placed, waiting, rejected) commits."""
        ok = commit(plan)
        if ok:
            now = time.perf_counter()
            for job_id in (*plan.placements, *plan.waits, *plan.rejections):
                decided_at.setdefault(job_id, now)
            if len(decided_at) >= n:
                done.set()
        return ok

    store.commit = stamped_commit  # type: ignore[method-assign]
    rt0 = store.round_trips if isinstance(store, RedisStore) else 0
    by0 = Counter(store.round_trips_by_call) if isinstance(store, RedisStore) else Counter()
    svc.start()
    began = time.perf_counter()
    for i in range(0, n, batch):
        out = svc.submit(specs[i : i + batch])
        now = time.perf_counter()
        for job, _ in out:
            submitted_at[job.id] = now
    if not done.wait(120):
        raise SystemExit(f"{kind}: only {len(decided_at)} of {n} jobs decided within 120 s")
    ended = max(decided_at.values())
    svc.stop()
    rt = (store.round_trips - rt0) if isinstance(store, RedisStore) else None
    by = (Counter(store.round_trips_by_call) - by0) if isinstance(store, RedisStore) else Counter()
    latencies = sorted((decided_at[j] - submitted_at[j]) * 1000 for j in submitted_at)
    if isinstance(store, RedisStore):
        store.wipe()
        store.close()
    return Run(
        kind,
        n,
        n / (ended - began),
        statistics.median(latencies),
        latencies[int(0.99 * (len(latencies) - 1))],
        rt / n if rt is not None else None,
        by,
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=4000)
    p.add_argument("--batch", type=int, default=100, help="jobs per submit call")
    p.add_argument("--runs", type=int, default=3, help="runs per store (alternating); medians are printed")
    p.add_argument(
        "--redis-url",
        default=os.environ.get("GRAVITY_BENCH_REDIS_URL")
        or os.environ.get("GRAVITY_TEST_REDIS_URL")
        or "redis://127.0.0.1:6379/15",
    )
    args = p.parse_args()
    catalog = load_catalog()
    runs: dict[str, list[Run]] = {"memory": [], "redis": []}
    for _ in range(args.runs):
        for kind in runs:
            runs[kind].append(one_run(kind, catalog, args.redis_url, args.jobs, args.batch))

    def med(kind: str, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in runs[kind])

    print(f"bench_store: {args.jobs} jobs in batches of {args.batch}, {args.runs} runs per store, medians")
    print(f"{'store':8} {'jobs/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'round trips/job':>16}")
    for kind in runs:
        rt = "-" if kind == "memory" else f"{med(kind, 'round_trips_per_job'):.3f}"
        print(
            f"{kind:8} {med(kind, 'throughput_jobs_s'):10.0f} {med(kind, 'p50_ms'):9.1f} {med(kind, 'p99_ms'):9.1f} {rt:>16}"
        )
    print(
        f"ratio redis/memory: throughput {med('redis', 'throughput_jobs_s') / med('memory', 'throughput_jobs_s'):.2f}x, "
        f"p99 {med('redis', 'p99_ms') / med('memory', 'p99_ms'):.2f}x"
    )
    last = runs["redis"][-1]
    split = ", ".join(f"{k} {v / last.jobs:.3f}" for k, v in last.by_call.most_common())
    print(f"redis round trips per job by call (last run): {split}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
