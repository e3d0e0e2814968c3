"""The scheduling service: admission, the scheduling cycle, execution feedback.

One cycle, as a recipe (Kueue-style), on a frozen snapshot with an injected clock:

    1. reconcile  apply execution events (started, succeeded, failed) to the store
    2. take       pending jobs: new ones, plus waiting ones when capacity freed or their retry is due
    3. snapshot   capacity, cached replicas, version
    4. build      the placement problem (jobs x options, costed once)
    5. place      with the configured placer
    6. commit     the plan atomically against the snapshot version; replan on conflict
    7. launch     placed jobs on the executor

The gRPC layer, the CLI and the simulator all drive this same class.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from placers.capacity import FULL
from placers.catalog import Catalog, Site
from placers.domain import Attempt, Job, JobSpec, JobState, Placement
from placers.explain import Explanation, explain, rejection_text, waiting_texts
from placers.problem import Options, PlacementProblem, ProblemSettings, Reason, build_problem
from placers.result import PlacementResult, Placer
from placers.waiting import ReleaseTimeline, WaitPolicy, WaitRule
from scheduler.admission import resolve_datasets, validate, validate_batch
from scheduler.clock import Clock
from scheduler.executors.base import ExecEvent, ExecEventKind, Executor, LaunchError, LaunchRequest
from scheduler.settings import CycleSettings
from scheduler.store.base import JobEvent, JobQuery, JobUpdate, Plan, Snapshot, Store

log = logging.getLogger("gravity.scheduler")

MAX_COMMIT_TRIES = 3
IDLE_S = 0.5  # an idle scheduler still cycles this often, to see execution events
RETRY_SLACK_GPUS = 8.0  # waiting work retried on top of twice the GPUs just freed


class NotFound(LookupError):
    pass


class Conflict(RuntimeError):
    """The request cannot be applied to the job in its current state."""


@dataclass(frozen=True, slots=True)
class PoolView:
    name: str
    gpu_model: str
    gpus_per_node: int
    nodes: int
    total_gpus: int
    free_gpus: float
    usd_per_gpu_hour: float
    spot_usd_per_gpu_hour: float | None
    dedicated: bool
    elastic: bool


@dataclass(frozen=True, slots=True)
class SiteView:
    site: Site
    pools: tuple[PoolView, ...]
    available: bool

    @property
    def total_gpus(self) -> int:
        return sum(p.total_gpus for p in self.pools)

    @property
    def free_gpus(self) -> float:
        return sum(p.free_gpus for p in self.pools)


@dataclass
class CycleReport:
    considered: int = 0
    placed: int = 0
    waiting: int = 0
    rejected: int = 0
    conflicts: int = 0
    events: int = 0
    launched: int = 0
    duration_s: float = 0.0
    placer: str = ""
    stats: dict[str, float] = field(default_factory=dict)


def new_job_id() -> str:
    """Time-ordered and unique: 'j-' + milliseconds (hex) + 32 random bits."""
    return f"j-{int(time.time() * 1000):011x}{secrets.token_hex(4)}"


class SchedulerService:
    def __init__(
        self,
        catalog: Catalog,
        store: Store,
        executor: Executor,
        placer: Placer,
        clock: Clock,
        cycle: CycleSettings | None = None,
        *,
        budgets_usd: Mapping[str, float] | None = None,
        budget_tag: str = "cost_center",
        new_id: Callable[[], str] = new_job_id,
        epoch: Callable[[], int] = lambda: 0,
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.executor = executor
        self.placer = placer
        self.clock = clock
        self.cycle = cycle or CycleSettings()
        self.budgets_usd = dict(budgets_usd or {})
        self.budget_tag = budget_tag
        self.new_id = new_id
        self.epoch = epoch
        self.problem_settings = ProblemSettings(
            replica_ttl_s=self.cycle.replica_ttl_s,
            service_horizon_s=self.cycle.service_horizon_s,
            waiting=wait_rule(self.cycle),
        )
        self._options = Options.of(catalog)  # the problem's columns depend on the catalog only
        self._parked: dict[str, float] = {}  # waiting job id -> retry no later than this
        self._freed_gpus = 0.0  # GPUs released since the last cycle: how much waiting work to retry
        self._last_full_retry = float("-inf")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_report = CycleReport()

    # ================================================================== client operations

    def submit(self, specs: Sequence[JobSpec]) -> list[tuple[Job, bool]]:
        """Validate (all or nothing) and durably queue; (job, created) per spec, idempotent by request_id."""
        now = self.clock.now()
        if len(specs) == 1:
            validate(specs[0], self.catalog, now)
        else:
            validate_batch(specs, self.catalog, now)
        jobs = [
            Job(id=self.new_id(), spec=s, state=JobState.PENDING, created_at=now, updated_at=now, reason="queued")
            for s in specs
        ]
        out = self.store.submit(jobs)
        self._wake.set()
        return out

    def get(self, job_id: str) -> Job:
        job = self.store.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        return job

    def list_jobs(self, query: JobQuery) -> tuple[list[Job], str]:
        return self.store.list_jobs(query)

    def cancel(self, job_id: str, by: str = "", reason: str = "") -> Job:
        job = self.get(job_id)
        if job.state.terminal:
            return job  # cancelling a finished job is a no-op, not an error
        at = self.clock.now()
        text = reason or f"cancelled by {by or 'a client'}"
        updated = self.store.update(
            JobUpdate(job_id, JobState.CANCELLED, at, reason=text, cancelled_by=by or "a client")
        )
        if updated is None:
            return self.get(job_id)
        if job.state.holds_capacity:
            self._freed_gpus += job.spec.gpu_equivalents * job.spec.replicas
            self.executor.cancel(job_id)
        self._parked.pop(job_id, None)
        self._wake.set()
        return updated

    def events(self, after_seq: int, job_id: str = "", timeout_s: float = 0.0) -> list[JobEvent]:
        return self.store.events(after_seq, job_id, timeout_s)

    def explain_job(self, job_id: str) -> tuple[Job, Explanation]:
        job = self.get(job_id)
        problem = self._problem_for([job.spec], [job.id], [job.created_at])
        chosen = -1
        note = ""
        if job.placement is not None:
            chosen = _option_of(problem, job.placement)
        elif job.state is JobState.PENDING:
            decision = self.placer.place(problem).decisions[0]
            chosen, note = decision.option, decision.note
        return job, explain(problem, 0, chosen, note)

    def explain_spec(self, spec: JobSpec) -> Explanation:
        """Dry run: where would this spec go now, and why? Nothing is submitted."""
        validate(spec, self.catalog, self.clock.now())
        problem = self._problem_for([spec], ["dry-run"])
        return explain(problem, 0, self.placer.place(problem).decisions[0].option)

    def sites(self) -> list[SiteView]:
        snap = self.store.snapshot()
        down = self.executor.unavailable_sites()
        views = []
        for site in self.catalog.sites:
            pools = tuple(
                PoolView(
                    name=p.name,
                    gpu_model=p.gpu_model,
                    gpus_per_node=p.gpus_per_node,
                    nodes=p.nodes,
                    total_gpus=p.max_gpus,
                    free_gpus=snap.capacity.free_milli(self.catalog.pool_index[p.key]) / FULL,
                    usd_per_gpu_hour=p.usd_per_gpu_hour,
                    spot_usd_per_gpu_hour=p.spot_usd_per_gpu_hour,
                    dedicated=p.dedicated,
                    elastic=p.elastic,
                )
                for p in site.pools
            )
            views.append(SiteView(site, pools, site.name not in down))
        return views

    # ================================================================== the cycle

    def run_cycle(self) -> CycleReport:
        started = time.perf_counter()
        report = CycleReport(placer=self.placer.name)
        # 1. reconcile
        report.events = self.reconcile()
        now = self.clock.now()
        # 2. take
        jobs = self._take(now)
        report.considered = len(jobs)
        if jobs:
            for _ in range(MAX_COMMIT_TRIES):
                # 3. snapshot  4. build  5. place
                snap = self.store.snapshot()
                problem = self._build(jobs, snap, now)
                result = self.placer.place(problem)
                plan, waiting = self._plan(problem, result, snap, now)
                retry_at = {problem.job_ids[d.job]: d.retry_at for d in result.decisions if d.retry_at is not None}
                # 6. commit
                if self.store.commit(plan):
                    report.placed, report.rejected = len(plan.placements), len(plan.rejections)
                    report.waiting = len(waiting)
                    report.stats = dict(result.stats)
                    default_retry = now + self.cycle.retry_waiting_s
                    for job_id in waiting:
                        # A placer's retry_at (a planned wait) wins; freed capacity re-decides sooner anyway.
                        self._parked[job_id] = retry_at.get(job_id, default_retry)
                    for job_id in (*plan.placements, *plan.rejections):
                        self._parked.pop(job_id, None)
                    # 7. launch
                    report.launched = self._launch(plan)
                    break
                report.conflicts += 1
                jobs = [j for j in (self.store.get(x.id) for x in jobs) if j and j.state is JobState.PENDING]
        report.duration_s = time.perf_counter() - started
        self.last_report = report
        return report

    def reconcile(self) -> int:
        """Apply execution events to the store; failed attempts are retried while retries remain."""
        events = self.executor.poll()
        for ev in events:
            self._apply(ev)
        return len(events)

    def recover(self) -> int:
        """After a restart: relaunch placed jobs the executor does not know (launch is idempotent)."""
        active = self.executor.active()
        placed, _ = self.store.list_jobs(JobQuery(states=frozenset({JobState.PLACED}), page_size=1_000_000))
        n = 0
        for job in placed:
            if job.id not in active and job.placement is not None:
                self._launch_one(job, job.placement)
                n += 1
        return n

    # ------------------------------------------------------------------ steps

    def _take(self, now: float) -> list[Job]:
        """The jobs to decide this cycle, in queue order, at most max_batch.

        New jobs and waiting jobs whose retry time has come always; when capacity freed, waiting
        jobs in queue order up to about twice the GPUs released (so the work per cycle follows
        the churn, not the backlog); every retry_waiting_s, all waiting jobs.
        """
        full = now - self._last_full_retry >= self.cycle.retry_waiting_s
        limit = self.cycle.max_batch
        pending = self.store.pending(limit=limit if full else limit + len(self._parked))
        if full:
            self._last_full_retry = now
            self._freed_gpus = 0.0
            ids = {j.id for j in pending}
            self._parked = {k: v for k, v in self._parked.items() if k in ids}  # forget jobs gone elsewhere
            return pending[:limit]
        budget = 2 * self._freed_gpus + RETRY_SLACK_GPUS if self._freed_gpus > 0 else 0.0
        self._freed_gpus = 0.0
        out: list[Job] = []
        for job in pending:
            retry_at = self._parked.get(job.id)
            if retry_at is None or retry_at <= now:
                out.append(job)
            elif budget > 0:
                out.append(job)
                budget -= job.spec.gpu_equivalents * job.spec.replicas
            if len(out) >= limit:
                break
        return out

    def next_wakeup(self) -> float | None:
        """The earliest time a waiting job is due for another decision (the simulator's next cycle)."""
        return min(self._parked.values(), default=None)

    def _build(self, jobs: Sequence[Job], snap: Snapshot, now: float) -> PlacementProblem:
        return build_problem(
            self.catalog,
            [j.spec for j in jobs],
            [j.id for j in jobs],
            [resolve_datasets(j.spec, self.catalog) for j in jobs],
            snap.capacity,
            now,
            extra_replicas=_live_replicas(snap, now),
            unavailable_sites=self.executor.unavailable_sites(),
            budget_remaining_usd=self.budgets_usd,
            budget_tag=self.budget_tag,
            settings=self.problem_settings,
            options=self._options,
            submitted_at=[j.created_at for j in jobs],
            release=ReleaseTimeline.from_allocations(self.catalog, snap.allocations, now),
        )

    def _problem_for(
        self, specs: Sequence[JobSpec], ids: Sequence[str], submitted_at: Sequence[float] | None = None
    ) -> PlacementProblem:
        now = self.clock.now()
        snap = self.store.snapshot()
        return build_problem(
            self.catalog,
            specs,
            ids,
            [resolve_datasets(s, self.catalog) for s in specs],
            snap.capacity,
            now,
            extra_replicas=_live_replicas(snap, now),
            unavailable_sites=self.executor.unavailable_sites(),
            budget_remaining_usd=self.budgets_usd,
            budget_tag=self.budget_tag,
            settings=self.problem_settings,
            options=self._options,
            submitted_at=submitted_at,
            release=ReleaseTimeline.from_allocations(self.catalog, snap.allocations, now),
        )

    def _plan(
        self, problem: PlacementProblem, result: PlacementResult, snap: Snapshot, now: float
    ) -> tuple[Plan, list[str]]:
        never = problem.never_fits()
        placements: dict[str, Placement] = {}
        rejections: dict[str, str] = {}
        waiting: dict[int, tuple[int, str]] = {}
        new_replicas: dict[str, set[str]] = {}
        for d in result.decisions:
            job_id = problem.job_ids[d.job]
            if d.placed:
                placement = problem.placement(
                    d.job, d.option, d.bindings, d.cost, d.data_moves, d.start_at, explanation=d.note
                )
                placements[job_id] = placement
                for move in placement.data_moves:
                    new_replicas.setdefault(move.dataset_id, set()).add(move.to_site)
            elif never[d.job]:
                rejections[job_id] = rejection_text(problem, d.job)
            else:
                waiting[d.job] = (d.reason or int(Reason.CAPACITY), d.note)
        waits = {problem.job_ids[j]: text for j, text in waiting_texts(problem, waiting).items()}
        for dataset, sites in result.new_replicas.items():
            new_replicas.setdefault(dataset, set()).update(sites)
        plan = Plan(
            base_version=snap.version,
            placements=placements,
            rejections=rejections,
            waits=waits,
            new_replicas={k: tuple(sorted(v)) for k, v in new_replicas.items()},
            replica_expires_at=now + self.cycle.replica_ttl_s,
            epoch=self.epoch(),
            decided_at=now,
        )
        return plan, list(waits)

    def _launch(self, plan: Plan) -> int:
        n = 0
        for job_id, placement in plan.placements.items():
            job = self.store.get(job_id)
            if job is not None and job.state is JobState.PLACED:
                self._launch_one(job, placement)
                n += 1
        return n

    def _launch_one(self, job: Job, placement: Placement) -> None:
        attempt = len(job.attempts)
        try:
            self.executor.launch(LaunchRequest(job.id, attempt, job.spec, placement, self.epoch()))
        except LaunchError as exc:
            log.warning("launch of %s at %s failed: %s", job.id, placement.site, exc)
            self.store.update(
                JobUpdate(
                    job.id,
                    JobState.FAILED,
                    self.clock.now(),
                    reason=f"launch at {placement.site} failed: {exc}",
                    attempt=attempt,
                    requeue=exc.retryable,
                )
            )
            self._freed_gpus += job.spec.gpu_equivalents * job.spec.replicas

    def _apply(self, ev: ExecEvent) -> None:
        job = self.store.get(ev.job_id)
        if job is None:
            return
        if ev.kind is ExecEventKind.STARTED:
            self.store.update(JobUpdate(ev.job_id, JobState.RUNNING, ev.at, attempt=ev.attempt))
            return
        if ev.kind is ExecEventKind.SUCCEEDED:
            update = JobUpdate(
                ev.job_id, JobState.SUCCEEDED, ev.at, exit_code=ev.exit_code, log_tail=ev.log_tail, attempt=ev.attempt
            )
        else:
            failed_before = sum(1 for a in job.attempts[:-1] if a.state is JobState.FAILED and not _free_retry(a))
            cause = ev.cause or (f"exit code {ev.exit_code}" if ev.exit_code is not None else "stopped")
            if ev.infrastructure:
                cause = f"{INFRA_PREFIX}{cause}"
            update = JobUpdate(
                ev.job_id,
                JobState.FAILED,
                ev.at,
                reason=cause,
                exit_code=ev.exit_code,
                log_tail=ev.log_tail,
                attempt=ev.attempt,
                requeue=ev.infrastructure or failed_before < job.spec.max_retries,
            )
        if self.store.update(update) is not None:
            self._freed_gpus += job.spec.gpu_equivalents * job.spec.replicas

    # ================================================================== background loop

    def start(self) -> None:
        if self._thread is not None:
            return
        self.recover()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="gravity-cycle", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _loop(self) -> None:
        """Cycle when woken (new work) or every IDLE_S, never more often than tick_s: batches form."""
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                self.run_cycle()
            except Exception:  # a bad cycle must not kill the scheduler; it is logged and retried
                log.exception("scheduling cycle failed")
            self._wake.wait(max(self.cycle.tick_s, IDLE_S))
            self._wake.clear()
            rest = self.cycle.tick_s - (time.monotonic() - began)
            if rest > 0:
                self._stop.wait(rest)


INFRA_PREFIX = "infrastructure: "


def _free_retry(attempt: Attempt) -> bool:
    """Attempts lost to the platform do not count against the job's max_retries."""
    return attempt.cause.startswith(INFRA_PREFIX)


def wait_rule(cycle: CycleSettings) -> WaitRule:
    """The placers' waiting rule from the cycle settings (one mapping, used by every placer)."""
    return WaitRule(
        policy=WaitPolicy(cycle.wait_policy),
        fallback=WaitPolicy(cycle.wait_fallback),
        constant_s=cycle.wait_constant_s,
        factor=cycle.wait_factor,
        margin_s=cycle.wait_margin_s,
        min_saving_usd=cycle.wait_min_saving_usd,
    )


class _LiveReplicas(Mapping[str, tuple[str, ...]]):
    """Cached dataset copies still alive at `now`, worked out per dataset when asked: a batch
    reads a few datasets, while the store may remember copies of thousands."""

    def __init__(self, replicas: Mapping[str, Mapping[str, float]], now: float) -> None:
        self._replicas = replicas
        self._now = now

    def __getitem__(self, dataset: str) -> tuple[str, ...]:
        return tuple(site for site, until in self._replicas[dataset].items() if until > self._now)

    def __iter__(self) -> Iterator[str]:
        return iter(self._replicas)

    def __len__(self) -> int:
        return len(self._replicas)


def _live_replicas(snap: Snapshot, now: float) -> Mapping[str, tuple[str, ...]]:
    return _LiveReplicas(snap.replicas, now)


def _option_of(problem: PlacementProblem, placement: Placement) -> int:
    key = problem.catalog.pool_index.get(f"{placement.site}/{placement.pool}", -1)
    for o in range(problem.n_options):
        if int(problem.options.pool[o]) == key and bool(problem.options.spot[o]) == placement.spot:
            return o
    return -1
