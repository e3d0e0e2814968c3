"""The simulation engine: an event heap and a virtual clock driving the production scheduler.

Nothing here schedules. The engine owns time and nothing else:

  * an event heap of (time, seq, event) holds the trace's arrivals, batched by timestamp
    (seq is the push order, so ties break the same way on every run);
  * the virtual executor (scheduler.executors.sim.SimExecutor) knows when running jobs end
    (`next_event_at`), and the service knows when waiting jobs are due again (`next_wakeup`);
  * the engine jumps the clock (scheduler.clock.ManualClock) to the next of those times,
    rounded up to the scheduling interval, submits the arrivals up to then through
    `SchedulerService.submit` (each at its own time), and runs one `run_cycle` - the same
    cycle that serves gRPC in production, with the same store, placer and settings.

So a cycle runs every `interval_s` of virtual time while something changes, and never while
nothing does. Fragmentation is sampled on its own grid between cycles (`sample_s`). The run
ends when no arrival is left, nothing runs, and no waiting job was placed for `max_stall_s`
(those jobs are reported as unfinished), or at `end_at_s`.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from placers.capacity import FULL
from placers.domain import Job, JobSpec
from placers.fragmentation import FragmentationModel
from placers.registry import make_placer
from scheduler.clock import ManualClock
from scheduler.executors.sim import SimExecutor
from scheduler.service import SchedulerService
from scheduler.settings import CycleSettings
from scheduler.store.base import JobQuery
from scheduler.store.memory import MemoryStore
from simulations.workload import Workload, group_arrivals

#: Waiting jobs are re-decided whenever capacity frees; without a placer-given retry time the
#: simulator retries them at least this often (virtual seconds) unless the scenario says otherwise.
SIM_RETRY_WAITING_S = 3600.0


@dataclass(frozen=True, slots=True)
class FragSample:
    at: float
    site: str
    free_gpus: float
    fragmented_gpus: float


@dataclass
class RunResult:
    jobs: list[Job]
    samples: list[FragSample]
    started_at: float  # virtual: the first arrival
    ended_at: float  # virtual: the last cycle
    cycles: int
    cycle_wall_s: float  # time spent inside run_cycle
    wall_s: float
    placer: str
    stats: dict[str, float] = field(default_factory=dict)


ProgressFn = Callable[[float, int, int], None]  # (virtual time, jobs finished, jobs total)


class Simulation:
    def __init__(self, workload: Workload, *, progress: ProgressFn | None = None) -> None:
        self.workload = workload
        scenario = workload.scenario
        self.sim = scenario.spec.simulation
        settings = scenario.settings
        cycle = settings.cycle
        if "retry_waiting_s" not in (scenario.spec.scheduler.get("cycle") or {}):
            cycle = CycleSettings(**{**cycle.model_dump(), "retry_waiting_s": SIM_RETRY_WAITING_S})
        self.clock = ManualClock(start=workload.epoch)
        catalog = workload.catalog
        self.store = MemoryStore(catalog)
        self.executor = SimExecutor(self.clock, catalog, actual_runtime_s=workload.actual_runtime_s)
        ids = itertools.count(1)
        self.service = SchedulerService(
            catalog,
            self.store,
            self.executor,
            make_placer(settings.placer),
            self.clock,
            cycle,
            budgets_usd=settings.budgets_usd,
            budget_tag=settings.budget_tag,
            new_id=lambda: f"j-{next(ids):07d}",
        )
        self.progress = progress
        self.frag = FragmentationModel(workload.mix)
        self._onprem_pools = {
            site: [i for i, p in enumerate(catalog.pools) if p.site == site and not p.elastic]
            for site in workload.build.onprem_sites
        }
        self._pool_models = [p.gpu_model for p in catalog.pools]

    def run(self) -> RunResult:
        wall0 = time.perf_counter()
        batches = group_arrivals(self.workload.arrivals)
        total = len(self.workload.arrivals)
        heap: list[tuple[float, int, list[JobSpec]]] = []
        seq = itertools.count()
        for at, specs in batches:
            heapq.heappush(heap, (at, next(seq), list(specs)))
        epoch = self.workload.epoch
        interval = self.sim.interval_s
        end_limit = epoch + self.sim.end_at_s if self.sim.end_at_s is not None else math.inf
        next_sample = epoch
        samples: list[FragSample] = []
        cycles = 0
        cycle_wall = 0.0
        last_progress = epoch
        finished = 0
        now = epoch
        while True:
            t_arrival = heap[0][0] if heap else math.inf
            t_done = self.executor.next_event_at()
            t_wake = self.service.next_wakeup()
            t = min(t_arrival, math.inf if t_done is None else t_done)
            if t_wake is not None:
                t = min(t, max(t_wake, now + max(interval, 1.0)))
            if math.isinf(t):
                break
            if not heap and t_done is None and t - last_progress > self.sim.max_stall_s:
                break  # only waiting jobs left, and none got anywhere for too long
            at = t if interval <= 0 else epoch + math.ceil((t - epoch) / interval - 1e-12) * interval
            at = max(at, now)
            if at > end_limit:
                break
            while next_sample <= at:  # the state between cycles does not change: sample it as is
                samples.extend(self._sample(next_sample))
                next_sample += self.sim.sample_s
            while heap and heap[0][0] <= at:
                when, _, specs = heapq.heappop(heap)
                self.clock.set(max(self.clock.now(), when))
                self.service.submit(specs)
            self.clock.set(at)
            now = at
            began = time.perf_counter()
            report = self.service.run_cycle()
            cycle_wall += time.perf_counter() - began
            cycles += 1
            if report.placed or report.rejected or report.events:
                last_progress = at
            if self.progress is not None:
                counts = self.store.counts()
                finished = sum(v for k, v in counts.items() if k.terminal)
                self.progress(at, finished, total)
        jobs, _ = self.store.list_jobs(JobQuery(page_size=max(1, total)))
        jobs.sort(key=lambda j: j.id)
        return RunResult(
            jobs=jobs,
            samples=samples,
            started_at=epoch,
            ended_at=now,
            cycles=cycles,
            cycle_wall_s=cycle_wall,
            wall_s=time.perf_counter() - wall0,
            placer=self.service.placer.name,
        )

    def _sample(self, at: float) -> list[FragSample]:
        """Free and fragmented GPUs of every on-prem site now (Weng et al.'s measure)."""
        cap = self.store.snapshot().capacity
        out = []
        for site, pools in self._onprem_pools.items():
            free = 0.0
            fragmented = 0.0
            for p in pools:
                gpu = cap.gpu_free[p].astype(np.int64)
                access = self.frag.mix.access([self._pool_models[p]] * len(gpu))
                free += float(gpu.sum()) / FULL
                fragmented += float(self.frag.node_fragmentation(gpu, cap.cpu_free[p], access).sum()) / FULL
            out.append(FragSample(at, site, free, fragmented))
        return out
