"""The scheduling service: admission, the scheduling cycle, execution feedback.

One cycle, as a recipe (Kueue-style), on a frozen snapshot with an injected clock:

    1. reconcile  apply execution events (started, succeeded, failed) to the store
    2. take       pending jobs: new ones, plus waiting ones when capacity freed or their retry is due
    3. snapshot   capacity, cached replicas, version
    4. build      the placement problem (jobs x options, costed once)
    5. place      with the configured placer
    5b. govern    check the result against every budget (reject / hold / allow-and-alert), write
                  the audit trail into the plan (scheduler.finops)
    6. commit     the plan atomically against the snapshot version; replan on conflict
    7. launch     placed jobs on the executor

The gRPC layer, the CLI and the simulator all drive this same class.

Replicas: only the leader (`is_leader`, a lease in the store; scheduler/leader.py) cycles; the
others serve reads and accept submissions. On becoming leader - and after a restart - it first
recovers (`recover`): the store and the executor are made to agree before anything new is planned.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

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
from scheduler.finops.budgets import BudgetState, Verdict
from scheduler.finops.governance import Governance
from scheduler.settings import CycleSettings
from scheduler.store.base import (
    ClaimVerdict,
    JobEvent,
    JobQuery,
    JobUpdate,
    Plan,
    SchemaError,
    Snapshot,
    Store,
    StoreError,
)

log = logging.getLogger("gravity.scheduler")

MAX_COMMIT_TRIES = 3
IDLE_S = 0.5  # an idle scheduler still cycles this often, to see execution events
SCHEMA_BACKOFF_S = 30.0  # a store holding data of an unknown schema is re-checked this often, not in a loop
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
    total_gpus: int  # the site's pools, capped by its burst quota
    free_gpus: float  # likewise


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


_ID_PREFIX = secrets.token_hex(3)  # this process
_ID_COUNTER = itertools.count()


def new_job_id() -> str:
    """Time-ordered and unique across replicas: 'j-' + ms (hex) + process prefix + counter."""
    return f"j-{int(time.time() * 1000):011x}{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFF:05x}"


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
        is_leader: Callable[[], bool] = lambda: True,
        governance: Governance | None = None,
    ) -> None:
        """`governance` (tag taxonomy, budgets, audit, metrics) defaults to one with no taxonomy whose
        budgets are `budgets_usd` (USD per month per value of `budget_tag`, held on breach)."""
        self.catalog = catalog
        self.store = store
        self.executor = executor
        self.placer = placer
        self.clock = clock
        self.cycle = cycle or CycleSettings()
        self.governance = governance or Governance(
            store,
            catalog,
            clock,
            service_horizon_s=self.cycle.service_horizon_s,
            budgets_usd=budgets_usd,
            budget_tag=budget_tag,
        )
        self.new_id = new_id
        self.epoch = epoch
        self.is_leader = is_leader
        self.problem_settings = ProblemSettings(
            replica_ttl_s=self.cycle.replica_ttl_s,
            service_horizon_s=self.cycle.service_horizon_s,
            waiting=wait_rule(self.cycle),
        )
        self._options = Options.of(catalog)  # the problem's columns depend on the catalog only
        self._parked: dict[str, float] = {}  # waiting job id -> planned retry time (inf: none planned)
        self._unplanned = 0  # waiting jobs without a planned retry: the sweep's business
        self._due: list[tuple[float, str]] = []  # heap of planned retries (stale entries skipped)
        self._cursor = 0  # store.pending_since: jobs that joined the queue later are new to us
        self._freed_gpus = 0.0  # GPUs released since the last cycle: how much waiting work to retry
        self._next_sweep: float | None = None  # when the next sweep of the waiting jobs starts
        self._sweep_at: int | None = None  # queue position of the sweep in progress
        self._swept: set[str] = set()  # the jobs the sweep in progress has seen
        # Submissions and scheduling cycles take turns (the API holds it while it decodes and answers
        # a submission too). Python runs on one core per process: when every gRPC thread decoded
        # submissions while a cycle ran, a saturating client got jobs accepted 4-8x faster than they
        # were decided and the undecided queue grew without bound. Taking turns, a flood of
        # submissions waits in gRPC (the client's backpressure) and decisions keep pace.
        self.turn = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._led_epoch: int | None = None  # the epoch this replica last recovered at; None while following
        self._recover_due = False  # a store error interrupted a cycle: recover before the next one
        self._unapplied: list[ExecEvent] = []  # execution events polled but not yet stored
        self.last_report = CycleReport()

    # ================================================================== client operations

    def submit(self, specs: Sequence[JobSpec]) -> list[tuple[Job, bool]]:
        """Validate (all or nothing) and durably queue; (job, created) per spec, idempotent by request_id."""
        with self.turn:
            return self._submit(specs)

    def _submit(self, specs: Sequence[JobSpec]) -> list[tuple[Job, bool]]:
        now = self.clock.now()
        taxonomy = self.governance.taxonomy
        if len(specs) == 1:
            validate(specs[0], self.catalog, now, taxonomy)
        else:
            validate_batch(specs, self.catalog, now, taxonomy=taxonomy)
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
        who = by or "a client"
        text = reason or f"cancelled by {who}"
        audit = self.governance.cancelled(job, who, text, at)
        updated = self.store.update(
            JobUpdate(job_id, JobState.CANCELLED, at, reason=text, cancelled_by=who, audit=(audit,))
        )
        if updated is None:
            return self.get(job_id)
        if job.state.holds_capacity:
            self._freed_gpus += job.spec.gpu_equivalents * job.spec.replicas
            self.executor.cancel(job_id)
        self._unpark(job_id)
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
        validate(spec, self.catalog, self.clock.now(), self.governance.taxonomy)
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
            free = sum(p.free_gpus for p in pools)
            if site.burst_quota_gpus is not None:
                free = min(free, snap.capacity.site_quota_free[self.catalog.site_index[site.name]] / FULL)
            total = self.catalog.total_gpus(site.name)
            views.append(SiteView(site, pools, site.name not in down, total, free))
        return views

    # ================================================================== the cycle

    def run_cycle(self) -> CycleReport:
        with self.turn:
            return self._run_cycle()

    def _run_cycle(self) -> CycleReport:
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
                budgets = self.governance.budget_state(now)
                problem = self._build(jobs, snap, now, budgets)
                result = self.placer.place(problem)
                # 5b. govern
                verdict = self.governance.review(budgets, problem, result)
                plan, waiting = self._plan(problem, result, snap, now, verdict)
                by_id = {j.id: j for j in jobs}
                plan = replace(plan, audit=self.governance.audit(problem, plan, verdict, by_id, now))
                retry_at = {
                    problem.job_ids[d.job]: d.retry_at for d in verdict.result.decisions if d.retry_at is not None
                }
                # 6. commit
                if self.store.commit(plan):
                    report.placed, report.rejected = len(plan.placements), len(plan.rejections)
                    report.waiting = len(waiting)
                    report.stats = dict(result.stats)
                    for job_id in waiting:
                        # A placer's retry_at (a planned wait) is kept; freed capacity and the
                        # sweep re-decide the others.
                        self._park(job_id, retry_at.get(job_id, math.inf), now)
                    for job_id in (*plan.placements, *plan.rejections):
                        self._unpark(job_id)
                    first = [j for j in jobs if j.decided_at is None]
                    self.governance.decided(plan, first, self.clock.now())  # latency up to the commit
                    # 7. launch
                    report.launched = self._launch(plan, {j.id: len(j.attempts) + 1 for j in jobs})
                    break
                report.conflicts += 1
                if not self.is_leader():
                    break  # refused because a newer leader exists: it plans now
                jobs = [j for j in self.store.get_many([x.id for x in jobs]) if j and j.state is JobState.PENDING]
        self.governance.tick(now)
        report.duration_s = time.perf_counter() - started
        self.last_report = report
        return report

    def reconcile(self) -> int:
        """Apply execution events to the store; failed attempts are retried while retries remain.

        Events are stored in one batch; if the store fails they are kept and applied again next
        time (updates are idempotent: stale or repeated news about an attempt is ignored)."""
        events = [*self._unapplied, *self.executor.poll()]
        self._unapplied = events
        self._apply_events(events)
        self._unapplied = []
        return len(events)

    def recover(self) -> int:
        """Make the store and the executor agree: after a restart, on becoming leader, after a store error.

        1. apply what the executor reports
        2. placed jobs the executor does not run are launched (claimed first; launch is idempotent
           by launch id); an attempt that another leader claimed, yet the executor does not run, is lost
        3. lost attempts - and running jobs the executor no longer knows - fail with that cause and are
           retried, as platform failures, without using the job's max_retries
        4. work the executor runs for a job the store does not hold as placed or running (cancelled
           through another replica, or a placement lost with Redis data) is stopped
        Returns the number of jobs launched, failed or stopped.
        """
        self.reconcile()
        active = self.executor.active()
        orphans = [
            job_id
            for job_id, job in zip(active, self.store.get_many(list(active)), strict=True)
            if job is None or not job.state.holds_capacity
        ]
        for job_id in orphans:
            log.warning("recovery: stopping %s, which the executor runs but the store does not hold", job_id)
            self.executor.cancel(job_id)
        placed: list[Job] = []
        lost: list[Job] = []
        # A running job at a site whose cluster does not answer may well still run: it is not lost
        # (declaring it so would run it twice during a partition); it is looked at again later.
        unreachable = self.executor.unavailable_sites()
        token = ""
        while True:
            page, token = self.store.list_jobs(
                JobQuery(states=frozenset({JobState.PLACED, JobState.RUNNING}), page_size=1000, page_token=token)
            )
            for job in page:
                if active.get(job.id) == len(job.attempts):
                    continue
                if job.state is JobState.PLACED:
                    placed.append(job)
                elif job.placement is None or job.placement.site not in unreachable:
                    lost.append(job)
            if not token:
                break
        launched = self._launch_claims(self.epoch(), [(j.id, len(j.attempts)) for j in placed], lost)
        if lost:
            now = self.clock.now()
            updates = [
                JobUpdate(
                    j.id,
                    JobState.FAILED,
                    now,
                    reason=f"{INFRA_PREFIX}lost: the executor does not run attempt {len(j.attempts)} "
                    "(scheduler restart or leader change)",
                    attempt=len(j.attempts),
                    requeue=True,  # the platform lost it, not the job's fault: retried without using max_retries
                )
                for j in lost
            ]
            self.store.update_many(updates)
            self._freed_gpus += sum(j.spec.gpu_equivalents * j.spec.replicas for j in lost)
            log.warning("recovery: %d lost attempt(s) retried", len(lost))
        if launched:
            log.info("recovery: %d placed job(s) launched", launched)
        return launched + len(lost) + len(orphans)

    def step(self) -> CycleReport | None:
        """One turn of the background loop: a cycle when this replica leads, nothing when it follows.

        A replica that has just become leader (a new epoch), or whose last cycle hit a store error,
        recovers first."""
        if not self.is_leader():
            if self._led_epoch is not None:
                log.info("no longer the leader: following")
            self._led_epoch = None
            return None
        epoch = self.epoch()
        try:
            if epoch != self._led_epoch or self._recover_due:
                if self._led_epoch is None:
                    log.info("leading at epoch %d: recovering", epoch)
                self._recover_due = True
                self.recover()
                self._led_epoch, self._recover_due = epoch, False
                self.retry_waiting()  # a new leader decides all waiting work afresh
                self._cursor, self._parked, self._due, self._unplanned = 0, {}, [], 0
            return self.run_cycle()
        except StoreError:
            self._recover_due = True  # a commit or claim may have applied without our knowing
            raise

    # ------------------------------------------------------------------ steps

    def _take(self, now: float) -> list[Job]:
        """The jobs to decide this cycle, at most max_batch, in queue order (priority, then age).

        Work follows events, not the backlog: every job new to the queue (submitted, or back after a
        failed attempt), waiting jobs whose planned retry is due, and when capacity freed the head of
        the queue up to about twice the GPUs released. Every retry_waiting_s a sweep re-decides the
        whole waiting backlog, sweep_batch jobs per cycle, for what no event signals (a deadline
        that passed, a site back). A cycle's cost is bounded however long the queue grows.
        """
        limit = self.cycle.max_batch
        picked: dict[str, Job] = {}

        def add(jobs: Iterable[Job]) -> int:
            n = 0
            for job in jobs:
                if len(picked) >= limit:
                    break
                picked.setdefault(job.id, job)
                n += 1
            return n

        fresh, self._cursor = self.store.pending_since(self._cursor, limit)
        add(fresh)
        due: list[str] = []
        while self._due and self._due[0][0] <= now:
            at, job_id = heapq.heappop(self._due)
            if self._parked.get(job_id) == at:
                due.append(job_id)
        if due:
            add(j for j in self.store.get_many(due) if j is not None and j.state is JobState.PENDING)
        if self._freed_gpus > 0:
            add(self._queue_head(2 * self._freed_gpus + RETRY_SLACK_GPUS, limit - len(picked)))
            self._freed_gpus = 0.0
        if self._sweep_at is None and self._next_sweep is not None and now >= self._next_sweep:
            self._sweep_at, self._swept = 0, set()
            self._next_sweep = now + self.cycle.retry_waiting_s if self._unplanned else None
        if self._sweep_at is not None:
            part = self.store.pending(self.cycle.sweep_batch, offset=self._sweep_at)
            taken = add(part)
            self._swept.update(j.id for j in part)
            # Decided jobs leave the queue and the positions behind them shift: a job skipped
            # that way is re-decided by the next sweep, or sooner when capacity frees.
            self._sweep_at = None if len(part) < self.cycle.sweep_batch else self._sweep_at + taken
            if self._sweep_at is None:  # a whole pass: forget jobs that left the queue elsewhere
                for job_id in [k for k in self._parked if k not in self._swept and k not in picked]:
                    self._unpark(job_id)
                self._swept = set()
        return sorted(picked.values(), key=lambda j: (-j.spec.priority, j.created_at))

    def _queue_head(self, gpus: float, limit: int) -> list[Job]:
        """The first pending jobs in queue order whose GPUs add up to about `gpus`."""
        out: list[Job] = []
        n = 64
        while limit > 0:
            head = self.store.pending(min(n, limit))
            out = []
            left = gpus
            for job in head:
                out.append(job)
                left -= job.spec.gpu_equivalents * job.spec.replicas
                if left <= 0:
                    return out
            if len(head) < min(n, limit):
                return out
            n *= 4
        return out

    def retry_waiting(self) -> None:
        """Decide every waiting job again, starting at the next cycle (a budget was raised, a rule changed)."""
        self._next_sweep = -math.inf
        self._sweep_at = None
        self._wake.set()

    def next_wakeup(self) -> float | None:
        """When waiting work is next due for a decision (the simulator's next cycle): a planned
        retry, or the next sweep of the waiting jobs (now, while one is in progress)."""
        while self._due and self._parked.get(self._due[0][1]) != self._due[0][0]:
            heapq.heappop(self._due)
        times = [self._due[0][0]] if self._due else []
        if self._sweep_at is not None:
            times.append(self.clock.now())
        elif self._next_sweep is not None:
            times.append(self._next_sweep)
        return min(times, default=None)

    def _park(self, job_id: str, retry_at: float, now: float) -> None:
        """Note a job left waiting: with a planned retry time, or (inf) for the sweep to re-decide."""
        old = self._parked.get(job_id)
        if old == retry_at:
            return
        self._unplanned += (retry_at == math.inf) - (old == math.inf)
        self._parked[job_id] = retry_at
        if retry_at != math.inf:
            heapq.heappush(self._due, (retry_at, job_id))
        elif self._next_sweep is None:
            self._next_sweep = now + self.cycle.retry_waiting_s

    def _unpark(self, job_id: str) -> None:
        if self._parked.pop(job_id, None) == math.inf:
            self._unplanned -= 1
            if not self._unplanned and self._next_sweep != -math.inf:
                self._next_sweep = None  # nothing left for a periodic sweep (a requested one stays)

    def _build(
        self, jobs: Sequence[Job], snap: Snapshot, now: float, budgets: BudgetState | None = None
    ) -> PlacementProblem:
        budgets = budgets if budgets is not None else self.governance.budget_state(now)
        return build_problem(
            self.catalog,
            [j.spec for j in jobs],
            [j.id for j in jobs],
            [resolve_datasets(j.spec, self.catalog) for j in jobs],
            snap.capacity,
            now,
            extra_replicas=_live_replicas(snap, now),
            unavailable_sites=self.executor.unavailable_sites(),
            budget_remaining_usd=budgets.remaining_usd(),
            budget_keys=budgets.keys([j.spec for j in jobs]),
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
        budgets = self.governance.budget_state(now)
        return build_problem(
            self.catalog,
            specs,
            ids,
            [resolve_datasets(s, self.catalog) for s in specs],
            snap.capacity,
            now,
            extra_replicas=_live_replicas(snap, now),
            unavailable_sites=self.executor.unavailable_sites(),
            budget_remaining_usd=budgets.remaining_usd(),
            budget_keys=budgets.keys(specs),
            settings=self.problem_settings,
            options=self._options,
            submitted_at=submitted_at,
            release=ReleaseTimeline.from_allocations(self.catalog, snap.allocations, now),
        )

    def _plan(
        self,
        problem: PlacementProblem,
        result: PlacementResult,
        snap: Snapshot,
        now: float,
        verdict: Verdict | None = None,
    ) -> tuple[Plan, list[str]]:
        """The plan for the placer's result, after the budgets' `verdict` (scheduler.finops) when given."""
        verdict = verdict or Verdict(result)
        result = verdict.result
        never = problem.never_fits()
        placements: dict[str, Placement] = {}
        rejections: dict[str, str] = {}
        waiting: dict[int, tuple[int, str]] = {}
        held: dict[str, str] = {}
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
            elif d.job in verdict.rejections:
                rejections[job_id] = verdict.rejections[d.job]
            elif d.job in verdict.holds:
                held[job_id] = verdict.holds[d.job].reason
            else:
                waiting[d.job] = (d.reason or int(Reason.CAPACITY), d.note)
        waits = {problem.job_ids[j]: text for j, text in waiting_texts(problem, waiting).items()}
        waits.update(held)
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

    def _launch(self, plan: Plan, attempts: Mapping[str, int]) -> int:
        """Launch the plan's placements (each placed job's attempt number in `attempts`)."""
        return self._launch_claims(plan.epoch, [(job_id, attempts[job_id]) for job_id in plan.placements])

    def _launch_claims(self, epoch: int, claims: Sequence[tuple[str, int]], lost: list[Job] | None = None) -> int:
        """Claim the launches in the store at `epoch`, then launch those granted.

        The claim is the fence: a deposed leader's claim is refused before the executor is called.
        An attempt another epoch claimed goes to `lost` when given (recovery), else is left alone."""
        n = 0
        for claim in self.store.claim_launches(epoch, claims):
            job = claim.job
            if claim.verdict is ClaimVerdict.FENCED:
                log.warning("launch of %s refused: epoch %d is not the leader's", claim.job_id, epoch)
            elif claim.verdict is ClaimVerdict.CLAIMED and job is not None and lost is not None:
                lost.append(job)
            elif claim.verdict is ClaimVerdict.LAUNCH and job is not None and job.placement is not None:
                if self.epoch() != epoch:
                    # Paused or cut off since the claim: the lease may be another's now. The claim stays
                    # ours; whoever leads next finds the attempt not running and retries it.
                    log.warning("launches at epoch %d stopped: the lease lapsed", epoch)
                    self._recover_due = True  # still leading at this epoch later? recovery launches them
                    break
                self._launch_one(job, job.placement, epoch)
                n += 1
        return n

    def _launch_one(self, job: Job, placement: Placement, epoch: int) -> None:
        attempt = len(job.attempts)
        try:
            self.executor.launch(LaunchRequest(job.id, attempt, job.spec, placement, epoch))
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

    def _apply_events(self, events: Sequence[ExecEvent]) -> None:
        if not events:
            return
        jobs = dict(zip((e.job_id for e in events), self.store.get_many([e.job_id for e in events]), strict=True))
        updates: list[JobUpdate] = []
        for ev in events:
            job = jobs.get(ev.job_id)
            if job is None:
                continue
            if ev.kind is ExecEventKind.STARTED:
                updates.append(JobUpdate(ev.job_id, JobState.RUNNING, ev.at, attempt=ev.attempt))
            elif ev.kind is ExecEventKind.HEALTH:  # a service's news: not an end
                updates.append(
                    JobUpdate(
                        ev.job_id,
                        JobState.RUNNING,
                        ev.at,
                        attempt=ev.attempt,
                        health=ev.health,
                        endpoint=ev.endpoint,
                        replicas_ready=ev.replicas_ready,
                    )
                )
            elif ev.kind is ExecEventKind.SUCCEEDED:
                updates.append(
                    JobUpdate(
                        ev.job_id,
                        JobState.SUCCEEDED,
                        ev.at,
                        exit_code=ev.exit_code,
                        log_tail=ev.log_tail,
                        attempt=ev.attempt,
                    )
                )
            else:
                cause = ev.cause or (f"exit code {ev.exit_code}" if ev.exit_code is not None else "stopped")
                if ev.infrastructure:
                    cause = f"{INFRA_PREFIX}{cause}"
                updates.append(
                    JobUpdate(
                        ev.job_id,
                        JobState.FAILED,
                        ev.at,
                        reason=cause,
                        exit_code=ev.exit_code,
                        log_tail=ev.log_tail,
                        attempt=ev.attempt,
                        requeue=ev.infrastructure or _retries_left(job),
                    )
                )
        for update, done in zip(updates, self.store.update_many(updates), strict=True):
            if done is not None and update.state is not JobState.RUNNING:
                self._freed_gpus += done.spec.gpu_equivalents * done.spec.replicas

    # ================================================================== background loop

    def start(self) -> None:
        if self._thread is not None:
            return
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
        store_down = False
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                self.step()
                if store_down:
                    log.info("store reachable again: scheduling resumed")
                store_down = False
            except StoreError as exc:  # the store is down: answer UNAVAILABLE meanwhile, retry next tick
                if not store_down:
                    log.warning("scheduling paused, the store is unavailable: %s", exc)
                store_down = True
            except SchemaError as exc:  # operator action needed; do not spin on it
                log.error("scheduling paused for %.0f s: %s", SCHEMA_BACKOFF_S, exc)
                self._stop.wait(SCHEMA_BACKOFF_S)
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


def _retries_left(job: Job) -> bool:
    """May the job's current attempt, when it fails, be retried? (platform losses do not count)"""
    failed_before = sum(1 for a in job.attempts[:-1] if a.state is JobState.FAILED and not _free_retry(a))
    return failed_before < job.spec.max_retries


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
