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


def one_run(kind: str, catalog: Catalog, url: str, n: int, batch: int, rate: float) -> Run:
    """Decide n jobs; submitted in batches, at `rate` jobs/s (0: as fast as the store accepts them)."""
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
        if rate > 0:
            time.sleep(max(0.0, began + i / rate - time.perf_counter()))
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
    p.add_argument("--rate", type=float, default=1000.0, help="offered jobs/s of the paced runs")
    p.add_argument("--runs", type=int, default=3, help="runs per store and mode (alternating); medians printed")
    p.add_argument(
        "--redis-url",
        default=os.environ.get("GRAVITY_BENCH_REDIS_URL")
        or os.environ.get("GRAVITY_TEST_REDIS_URL")
        or "redis://127.0.0.1:6379/15",
    )
    args = p.parse_args()
    catalog = load_catalog()
    modes = {"saturated": 0.0, f"paced {args.rate:g}/s": args.rate}
    runs: dict[tuple[str, str], list[Run]] = {(m, k): [] for m in modes for k in ("memory", "redis")}
    for _ in range(args.runs):
        for (mode, kind), got in runs.items():
            got.append(one_run(kind, catalog, args.redis_url, args.jobs, args.batch, modes[mode]))

    def med(mode: str, kind: str, attr: str) -> float:
        return float(statistics.median(getattr(r, attr) for r in runs[(mode, kind)]))

    print(f"bench_store: {args.jobs} jobs in batches of {args.batch}, {args.runs} runs each, medians")
    print(f"{'mode':16} {'store':8} {'jobs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'round trips/job':>16}")
    for mode, kind in runs:
        rt = "-" if kind == "memory" else f"{med(mode, kind, 'round_trips_per_job'):.3f}"
        tput, p50, p99 = (med(mode, kind, a) for a in ("throughput_jobs_s", "p50_ms", "p99_ms"))
        print(f"{mode:16} {kind:8} {tput:8.0f} {p50:8.1f} {p99:8.1f} {rt:>16}")
    for mode in modes:
        tput = med(mode, "redis", "throughput_jobs_s") / med(mode, "memory", "throughput_jobs_s")
        p99 = med(mode, "redis", "p99_ms") / med(mode, "memory", "p99_ms")
        print(f"ratio redis/memory, {mode}: throughput {tput:.2f}x, p99 latency {p99:.2f}x")
    last = runs[(next(iter(modes)), "redis")][-1]
    split = ", ".join(f"{k} {v / last.jobs:.3f}" for k, v in last.by_call.most_common())
    print(f"redis round trips per job by call (last saturated run): {split}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
