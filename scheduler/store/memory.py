"""The embedded store: everything in this process, guarded by one lock. Lost on exit."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence

from placers.capacity import CapacityState, Demand
from placers.catalog import Catalog
from placers.domain import Attempt, Job, JobState, Placement
from scheduler.store.base import (
    EventKind,
    JobEvent,
    JobQuery,
    JobUpdate,
    Plan,
    Snapshot,
)
from scheduler.store.transitions import apply_update, matches

EVENT_HISTORY = 200_000


class MemoryStore:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._lock = threading.RLock()
        self._new_event = threading.Condition(self._lock)
        self._jobs: dict[str, Job] = {}
        self._seq_of: dict[str, int] = {}
        self._by_request: dict[str, str] = {}
        self._pending: dict[str, None] = {}
        self._capacity = CapacityState.empty(catalog)
        self._allocations: dict[str, Placement] = {}
        self._replicas: dict[str, dict[str, float]] = {}
        self._version = 0
        self._submitted = 0
        self._events: deque[JobEvent] = deque(maxlen=EVENT_HISTORY)
        self._seq = 0
        self._counts: dict[JobState, int] = dict.fromkeys(JobState, 0)

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
            if plan.base_version != self._version:
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
                attempt = Attempt(len(job.attempts) + 1, placement.site, placement.start_at, state=JobState.PLACED)
                placed = job.evolve(
                    state=JobState.PLACED,
                    placement=placement,
                    reason="",
                    updated_at=placement.start_at,
                    attempts=(*job.attempts, attempt),
                    decided_at=job.decided_at or plan.decided_at,
                )
                self._set(placed)
                self._emit(EventKind.PLACED, placed, placement.start_at)
            for job_id, reason in plan.rejections.items():
                job = self._jobs[job_id]
                rejected = job.evolve(
                    state=JobState.REJECTED,
                    reason=reason,
                    finished_at=plan.decided_at,
                    updated_at=plan.decided_at,
                    decided_at=job.decided_at or plan.decided_at,
                )
                self._set(rejected)
                self._emit(EventKind.REJECTED, rejected, plan.decided_at)
            for job_id, reason in plan.waits.items():
                job = self._jobs.get(job_id)
                if job is not None and job.state is JobState.PENDING and job.reason != reason:
                    waiting = job.evolve(reason=reason, decided_at=job.decided_at or plan.decided_at)
                    self._set(waiting)
                    self._emit(EventKind.WAITING, waiting, plan.decided_at)
            for dataset, sites in plan.new_replicas.items():
                held = self._replicas.setdefault(dataset, {})
                for site in sites:
                    held[site] = max(held.get(site, 0.0), plan.replica_expires_at)
            if plan.placements or plan.rejections:
                self._version += 1
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
            self._new_event.notify_all()
            return new

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
        if job.state is JobState.PENDING:
            self._pending[job.id] = None
        else:
            self._pending.pop(job.id, None)

    def _emit(self, kind: EventKind, job: Job, at: float) -> None:
        self._seq += 1
        self._events.append(JobEvent(self._seq, kind, job, at))

    # ------------------------------------------------------------------ reads

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

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

    def pending(self, limit: int) -> list[Job]:
        with self._lock:
            jobs = [self._jobs[i] for i in self._pending]
        jobs.sort(key=lambda j: -j.spec.priority)  # stable: submission order within a tier
        return jobs[:limit]

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

    def close(self) -> None:
        with self._lock:
            self._new_event.notify_all()
