"""The embedded store: everything in this process, guarded by one lock. Lost on exit."""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence

from placers.capacity import CapacityState, Demand
from placers.catalog import Catalog
from placers.domain import Job, JobState, Placement
from scheduler.finops.model import AuditEntry, AuditQuery, Budget, BudgetAlert, VersionMismatch
from scheduler.store.base import (
    ClaimVerdict,
    EventKind,
    JobEvent,
    JobQuery,
    JobUpdate,
    LaunchClaim,
    Plan,
    Snapshot,
)
from scheduler.store.transitions import apply_update, matches, placed, rejected, waiting

EVENT_HISTORY = 200_000


class MemoryStore:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._lock = threading.RLock()
        self._new_event = threading.Condition(self._lock)
        self._jobs: dict[str, Job] = {}
        self._seq_of: dict[str, int] = {}
        self._by_request: dict[str, str] = {}
        # The queue: per priority, job id -> enqueue number, in enqueue order (a job that leaves
        # the queue and comes back, a retry, joins the back of its tier with a new number).
        self._queue: dict[int, dict[str, int]] = {}
        self._enqueued = 0
        self._capacity = CapacityState.empty(catalog)
        self._allocations: dict[str, Placement] = {}
        self._replicas: dict[str, dict[str, float]] = {}
        self._version = 0
        self._submitted = 0
        self._events: deque[JobEvent] = deque(maxlen=EVENT_HISTORY)
        self._seq = 0
        self._counts: dict[JobState, int] = dict.fromkeys(JobState, 0)
        self._budgets: dict[str, Budget] = {}
        self._alerts: list[BudgetAlert] = []
        self._alert_keys: set[tuple[str, str, float]] = set()
        self._audit: list[AuditEntry] = []
        self._audit_by_job: dict[str, list[int]] = {}  # job id -> positions in _audit
        self._claims: dict[tuple[str, int], int] = {}  # (job id, attempt) -> epoch that launched it
        self._lease: tuple[str, int, float] | None = None  # holder, epoch, expires at (monotonic)
        self._epoch = 0

    # ------------------------------------------------------------------ writes

    def submit(self, jobs: Sequence[Job]) -> list[tuple[Job, bool]]:
        out: list[tuple[Job, bool]] = []
        with self._lock:
            for job in jobs:
                rid = job.spec.request_id
                if rid and rid in self._by_request:
                    out.append((self._jobs[self._by_request[rid]], False))
                    continue
                if job.id in self._jobs:
                    raise ValueError(f"duplicate job id {job.id}")
                self._set(job)
                self._submitted += 1
                self._seq_of[job.id] = self._submitted
                if rid:
                    self._by_request[rid] = job.id
                self._emit(EventKind.SUBMITTED, job, job.created_at)
                out.append((job, True))
            if out:
                self._new_event.notify_all()
        return out

    def commit(self, plan: Plan) -> bool:
        with self._lock:
            if plan.base_version != self._version or self._fenced(plan.epoch):
                return False
            for job_id in (*plan.placements, *plan.rejections):
                job = self._jobs.get(job_id)
                if job is None or job.state is not JobState.PENDING:
                    return False
            for job_id, placement in plan.placements.items():
                job = self._jobs[job_id]
                pool = self.catalog.pool_index[f"{placement.site}/{placement.pool}"]
                self._capacity.take(pool, Demand.of(job.spec), placement.bindings)
                self._allocations[job_id] = placement
                new = placed(job, placement, plan.decided_at)
                self._set(new)
                self._emit(EventKind.PLACED, new, placement.start_at)
            for job_id, reason in plan.rejections.items():
                new = rejected(self._jobs[job_id], reason, plan.decided_at)
                self._set(new)
                self._emit(EventKind.REJECTED, new, plan.decided_at)
            for job_id, reason in plan.waits.items():
                job = self._jobs.get(job_id)
                new_or_none = waiting(job, reason, plan.decided_at) if job is not None else None
                if new_or_none is not None:
                    self._set(new_or_none)
                    self._emit(EventKind.WAITING, new_or_none, plan.decided_at)
            for dataset, sites in plan.new_replicas.items():
                held = self._replicas.setdefault(dataset, {})
                for site in sites:
                    held[site] = max(held.get(site, 0.0), plan.replica_expires_at)
            if plan.placements or plan.rejections:
                self._version += 1
            self._append_audit(plan.audit)
            self._new_event.notify_all()
            return True

    def update(self, update: JobUpdate) -> Job | None:
        with self._lock:
            job = self._jobs.get(update.job_id)
            if job is None:
                return None
            change = apply_update(job, update)
            if change is None:
                return None
            new, kind = change
            if job.state.holds_capacity and not new.state.holds_capacity:
                self._release(job)
            if new.state is not job.state:
                self._version += 1
            self._set(new)
            self._emit(kind, new, update.at)
            self._append_audit(update.audit)
            self._new_event.notify_all()
            return new

    def update_many(self, updates: Sequence[JobUpdate]) -> list[Job | None]:
        with self._lock:
            return [self.update(u) for u in updates]

    # ------------------------------------------------------------------ leadership and launches

    def claim_launches(self, epoch: int, claims: Sequence[tuple[str, int]]) -> list[LaunchClaim]:
        with self._lock:
            fenced = self._fenced(epoch)
            out: list[LaunchClaim] = []
            for job_id, attempt in claims:
                job = self._jobs.get(job_id)
                if fenced:
                    out.append(LaunchClaim(job_id, attempt, ClaimVerdict.FENCED))
                elif job is None or job.state is not JobState.PLACED or len(job.attempts) != attempt:
                    out.append(LaunchClaim(job_id, attempt, ClaimVerdict.NOT_PLACED))
                else:
                    holder = self._claims.setdefault((job_id, attempt), epoch)
                    verdict = ClaimVerdict.LAUNCH if holder == epoch else ClaimVerdict.CLAIMED
                    out.append(LaunchClaim(job_id, attempt, verdict, job, holder))
            return out

    def acquire_lease(self, holder: str, ttl_s: float) -> int:
        with self._lock:
            now = time.monotonic()
            lease = self._lease
            if lease is not None and lease[2] > now and lease[0] != holder:
                return 0
            if lease is None or lease[2] <= now:
                self._epoch += 1
                epoch = self._epoch
            else:
                epoch = lease[1]
            self._lease = (holder, epoch, now + ttl_s)
            return epoch

    def release_lease(self, holder: str) -> None:
        with self._lock:
            if self._lease is not None and self._lease[0] == holder:
                self._lease = None

    def _fenced(self, epoch: int) -> bool:
        """True when `epoch` may not act: not the live lease's epoch (0 = only while no lease is held)."""
        lease = self._lease
        current = lease[1] if lease is not None and lease[2] > time.monotonic() else 0
        return epoch != current

    def _release(self, job: Job) -> None:
        placement = self._allocations.pop(job.id, None)
        if placement is None:
            return
        pool = self.catalog.pool_index[f"{placement.site}/{placement.pool}"]
        self._capacity.release(pool, Demand.of(job.spec), placement.bindings)

    def _set(self, job: Job) -> None:
        old = self._jobs.get(job.id)
        if old is not None:
            self._counts[old.state] -= 1
        self._counts[job.state] += 1
        self._jobs[job.id] = job
        tier = self._queue.get(job.spec.priority)
        if job.state is JobState.PENDING:
            if tier is None:
                tier = self._queue[job.spec.priority] = {}
            if job.id not in tier:
                self._enqueued += 1
                tier[job.id] = self._enqueued
        elif tier is not None:
            tier.pop(job.id, None)

    def _emit(self, kind: EventKind, job: Job, at: float) -> None:
        self._seq += 1
        self._events.append(JobEvent(self._seq, kind, job, at))

    # ------------------------------------------------------------------ reads

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def get_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        with self._lock:
            return [self._jobs.get(i) for i in job_ids]

    def list_jobs(self, query: JobQuery) -> tuple[list[Job], str]:
        with self._lock:
            before = int(query.page_token) if query.page_token else None
            jobs = self._jobs
            order: Iterable[str] = reversed(jobs)
            out: list[Job] = []
            for job_id in order:
                seq = self._seq_of[job_id]
                if before is not None and seq >= before:
                    continue
                job = jobs[job_id]
                if matches(job, query):
                    out.append(job)
                    if len(out) == query.page_size:
                        break
            full = len(out) == query.page_size
            return out, (str(self._seq_of[out[-1].id]) if out and full else "")

    def pending(self, limit: int, offset: int = 0) -> list[Job]:
        if limit <= 0:
            return []
        with self._lock:
            tiers = [self._queue[p] for p in sorted(self._queue, reverse=True)]
            return [self._jobs[i] for i in itertools.islice(itertools.chain(*tiers), offset, offset + limit)]

    def pending_since(self, cursor: int, limit: int) -> tuple[list[Job], int]:
        with self._lock:
            fresh: list[str] = []
            for p in sorted(self._queue, reverse=True):
                tier = self._queue[p]
                newest_first = itertools.takewhile(lambda kv: kv[1] > cursor, reversed(tier.items()))
                fresh.extend(reversed([job_id for job_id, _ in newest_first]))
            if len(fresh) > limit:
                return [self._jobs[i] for i in fresh[:limit]], cursor
            return [self._jobs[i] for i in fresh], self._enqueued

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(
                version=self._version,
                capacity=self._capacity.copy(),
                replicas={d: dict(s) for d, s in self._replicas.items()},
                allocations=dict(self._allocations),
            )

    def events(self, after_seq: int, job_id: str = "", timeout_s: float = 0.0) -> list[JobEvent]:
        with self._lock:
            found = self._since(after_seq, job_id)
            if not found and timeout_s > 0:
                self._new_event.wait_for(lambda: bool(self._since(after_seq, job_id)), timeout=timeout_s)
                found = self._since(after_seq, job_id)
            return found

    def _since(self, after_seq: int, job_id: str) -> list[JobEvent]:
        if not self._events or self._events[-1].seq <= after_seq:
            return []
        first = self._events[0].seq
        start = max(0, after_seq + 1 - first)
        picked = [self._events[i] for i in range(start, len(self._events))]
        return [e for e in picked if e.job.id == job_id] if job_id else picked

    def last_seq(self) -> int:
        with self._lock:
            return self._seq

    def counts(self) -> Mapping[JobState, int]:
        with self._lock:
            return dict(self._counts)

    # ------------------------------------------------------------------ FinOps

    def put_budget(self, budget: Budget, expected_version: int, audit: AuditEntry | None = None) -> Budget:
        with self._lock:
            current = self._budgets.get(budget.id)
            actual = current.version if current else 0
            if actual != expected_version:
                raise VersionMismatch(f"budget {budget.id}", expected_version, actual)
            stored = dataclasses.replace(budget, version=actual + 1)
            self._budgets[budget.id] = stored
            self._append_audit((audit,) if audit else ())
            return stored

    def delete_budget(self, budget_id: str, expected_version: int = 0, audit: AuditEntry | None = None) -> Budget:
        with self._lock:
            current = self._budgets.get(budget_id)
            actual = current.version if current else 0
            if current is None or (expected_version and actual != expected_version):
                raise VersionMismatch(f"budget {budget_id}", expected_version, actual)
            del self._budgets[budget_id]
            self._append_audit((audit,) if audit else ())
            return current

    def get_budget(self, budget_id: str) -> Budget | None:
        with self._lock:
            return self._budgets.get(budget_id)

    def list_budgets(self) -> list[Budget]:
        with self._lock:
            return [self._budgets[k] for k in sorted(self._budgets)]

    def record_alert(self, alert: BudgetAlert) -> BudgetAlert | None:
        with self._lock:
            if alert.key in self._alert_keys:
                return None
            self._alert_keys.add(alert.key)
            stored = dataclasses.replace(alert, seq=len(self._alerts) + 1)
            self._alerts.append(stored)
            self._new_event.notify_all()
            return stored

    def alerts(
        self, after_seq: int, timeout_s: float = 0.0, budget_id: str = "", period: str = ""
    ) -> list[BudgetAlert]:
        def found() -> list[BudgetAlert]:
            return [
                a
                for a in self._alerts[max(0, after_seq) :]
                if (not budget_id or a.budget_id == budget_id) and (not period or a.period == period)
            ]

        with self._lock:
            out = found()
            if not out and timeout_s > 0:
                self._new_event.wait_for(lambda: bool(found()), timeout=timeout_s)
                out = found()
            return out

    def last_alert_seq(self) -> int:
        with self._lock:
            return len(self._alerts)

    def query_audit(self, query: AuditQuery) -> list[AuditEntry]:
        with self._lock:
            if query.job_id:
                positions: Iterable[int] = self._audit_by_job.get(query.job_id, ())
            else:
                positions = range(max(0, query.after_seq), len(self._audit))
            out: list[AuditEntry] = []
            for i in positions:
                if i < query.after_seq:  # entry i has seq i + 1
                    continue
                e = self._audit[i]
                if query.matches(e):
                    out.append(e._replace(seq=i + 1))
                    if len(out) >= query.limit:
                        break
            return out

    def _append_audit(self, entries: Iterable[AuditEntry]) -> None:
        """Entries are kept as given; an entry's seq is its position + 1, filled in when read."""
        for e in entries:
            self._audit.append(e)
            if e.job_id:
                self._audit_by_job.setdefault(e.job_id, []).append(len(self._audit) - 1)

    def close(self) -> None:
        with self._lock:
            self._new_event.notify_all()
