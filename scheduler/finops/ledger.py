"""The cost ledger: spend by tag and calendar month, kept current from the store's job events.

Derived, never a second source of truth: every figure is `costing.accrual` of a durable job
record. At start (or after missing events) the ledger rebuilds itself from the store's jobs;
then it applies each job event in order. Jobs that hold capacity are costed live (their
current attempt keeps accruing, and what their placement still projects is *committed*);
every other job's cost is constant and summed into per-(month, tag, value) totals.

Applying a job record replaces what the ledger knew of that job, so an event seen twice (the
window between listing the jobs and reading the events after a rebuild) is harmless.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass

from placers.domain import Job, UnixSeconds
from scheduler.finops.costing import ZERO, Accrual, CostParams, Costs, accrual
from scheduler.finops.periods import Period
from scheduler.store.base import EventKind, JobQuery, Store

ALL = ("", "")  # the bucket every job's cost goes into
_PAGE = 10_000
_SKIP = frozenset({EventKind.SUBMITTED, EventKind.WAITING})  # pending news that changes no cost


@dataclass(frozen=True, slots=True)
class Spend:
    accrued: Costs  # incurred in the period so far
    committed_usd: float  # still to come, projected by the placements of jobs holding capacity

    @property
    def total_usd(self) -> float:
        return self.accrued.total_usd + self.committed_usd


class Ledger:
    def __init__(self, store: Store, params: CostParams, dedicated_pools: frozenset[str] = frozenset()) -> None:
        self.store = store
        self.params = params
        self.dedicated_pools = dedicated_pools
        self._lock = threading.RLock()
        self._seq = -1  # last event applied; -1 = not built yet
        self._window_end = 0  # until this seq, records of ended jobs are kept (events may repeat them)
        # jobs holding capacity: tags, record, and its accrual (computed when first asked for)
        self._active: dict[str, tuple[Mapping[str, str], Job, Accrual | None]] = {}
        self._settled: dict[str, tuple[tuple[tuple[str, str], ...], dict[str, Costs]]] = {}
        self._totals: dict[tuple[str, str, str], Costs] = {}
        self._terminal: set[str] = set()  # ended jobs still in _settled (only inside the rebuild window)
        self.rebuilds = 0

    # ------------------------------------------------------------------ keeping up

    def sync(self) -> None:
        """Apply the job events since the last sync (rebuild from the jobs when some were missed)."""
        with self._lock:
            if self._seq < 0:
                self._rebuild()
            events = self.store.events(self._seq)
            if events and events[0].seq > self._seq + 1:
                self._rebuild()
                events = self.store.events(self._seq)
            for ev in events:
                if ev.kind not in _SKIP:
                    self._apply(ev.job)
                self._seq = ev.seq
            if self._window_end and self._seq >= self._window_end:
                self._window_end = 0
                for job_id in self._terminal:
                    self._settled.pop(job_id, None)
                self._terminal.clear()

    def _rebuild(self) -> None:
        self._active.clear()
        self._settled.clear()
        self._totals.clear()
        self._terminal.clear()
        start = self.store.last_seq()
        self._window_end = start + 1  # records of ended jobs are kept while listing
        for job in self._all_jobs():
            self._apply(job)
        self._seq = start
        end = self.store.last_seq()
        if end == start:  # nothing happened while listing: no event can repeat what was listed
            self._window_end = 0
            for job_id in self._terminal:
                self._settled.pop(job_id, None)
            self._terminal.clear()
        else:
            self._window_end = end
        self.rebuilds += 1

    def _all_jobs(self) -> Iterator[Job]:
        token = ""
        while True:
            jobs, token = self.store.list_jobs(JobQuery(page_size=_PAGE, page_token=token))
            yield from jobs
            if not token:
                return

    def _apply(self, job: Job) -> None:
        old = self._settled.pop(job.id, None)
        if old is not None:
            self._add(old[0], old[1], -1)
        self._active.pop(job.id, None)
        self._terminal.discard(job.id)
        if not job.attempts:
            return
        tags = job.spec.tags
        if job.state.holds_capacity:
            self._active[job.id] = (tags, job, None)
            return
        monthly = accrual(job, self.params, self.dedicated_pools).monthly(float("inf"))
        if not monthly:
            return
        items = (*tags.items(), ALL)
        self._add(items, monthly, +1)
        if job.state.terminal:
            if not self._window_end:
                return  # final and never seen again: only the totals keep it
            self._terminal.add(job.id)
        self._settled[job.id] = (items, monthly)

    def _add(self, items: tuple[tuple[str, str], ...], monthly: Mapping[str, Costs], sign: int) -> None:
        for label, cost in monthly.items():
            for k, v in items:
                key = (label, k, v)
                self._totals[key] = (self._totals.get(key, ZERO) + cost) if sign > 0 else (self._totals[key] - cost)

    # ------------------------------------------------------------------ questions

    def spend(
        self, month: Period, scopes: Collection[tuple[str, str]], now: UnixSeconds
    ) -> dict[tuple[str, str], Spend]:
        """For each (tag, value) scope: cost accrued in `month` up to `now`, and commitments."""
        with self._lock:
            accrued = {sc: self._totals.get((month.label, *sc), ZERO) for sc in scopes}
            committed = dict.fromkeys(scopes, 0.0)
            for tags, acc in self._active_accruals():
                hits = [sc for sc in ((k, v) for k, v in tags.items()) if sc in accrued]
                if ALL in accrued:
                    hits.append(ALL)
                if not hits:
                    continue
                cost = acc.costs(month, now)
                ahead = acc.committed_usd(now)
                for sc in hits:
                    accrued[sc] = accrued[sc] + cost
                    committed[sc] += ahead
            return {sc: Spend(accrued[sc], committed[sc]) for sc in scopes}

    def by_tag(self, key: str, month: Period, now: UnixSeconds) -> dict[str, Costs]:
        """Cost accrued in `month` up to `now` per value of tag `key` (jobs without the tag left out)."""
        with self._lock:
            out = {v: c for (label, k, v), c in self._totals.items() if label == month.label and k == key}
            for tags, acc in self._active_accruals():
                value = tags.get(key)
                if value is None:
                    continue
                cost = acc.costs(month, now)
                if not cost.zero:
                    out[value] = out.get(value, ZERO) + cost
            return out

    def _active_accruals(self) -> Iterator[tuple[Mapping[str, str], Accrual]]:
        for job_id, (tags, job, known) in self._active.items():
            acc = known if known is not None else accrual(job, self.params, self.dedicated_pools)
            if known is None:
                self._active[job_id] = (tags, job, acc)  # same key: safe while iterating
            yield tags, acc

    def active_jobs(self) -> int:
        with self._lock:
            return len(self._active)
