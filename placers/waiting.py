"""Wait or burst: when a job may stay pending for cheaper capacity instead of paying for it now.

Every placer (greedy, joint, ...) asks the same `WaitPlanner` before it commits a job to an option
while a cheaper option is full; the planner answers "take it" (None) or a deliberate wait:
`Decision(reason=Reason.DEFERRED, note=..., retry_at=...)`. The service keeps a deferred job pending,
re-decides it when capacity frees and no later than `retry_at`, and `SchedulerService.next_wakeup()`
tells a simulator when that is.

Policies (`WaitPolicy`, chosen by `WaitRule.policy`; in the service `CycleSettings.wait_policy`):

    no-wait    never wait while any option can take the job now (Starburst's No-Wait: pure bursting)
    constant   wait up to `constant_s` seconds after submission (Starburst's Constant-Wait)
    runtime    wait up to `factor` x the job's runtime on the reference GPU (the "k x runtime" rule;
               `linear_runtime` in the Starburst artifact)
    compute    wait up to `factor` x GPUs x runtime, i.e. longer for bigger jobs (Starburst's
               Compute-Wait, proportional to the job's compute; `linear_cost` in its artifact)
    deadline   Gravity's rule. A job WITH a deadline waits for a cheaper option only when the release
               timeline (running jobs' expected completions, `ReleaseTimeline`) says that option
               frees early enough to start, transfer its data and finish by the deadline minus
               `margin_s`, and no later than the latest time it could still fall back to the option it
               would take now. Jobs WITHOUT a deadline follow `fallback` (one of the other four).

Common to every policy:

* A job waits only for a strictly cheaper option (by more than `min_saving_usd`) that satisfies every
  permanent rule and is blocked only because its pool is full right now. No cheaper blocked option:
  no wait. Each policy's limit is measured from the job's submission time (`problem.submitted_at`).
* A wait never outlives the deadline: the limit is capped at the latest start that still meets the
  deadline (minus `margin_s`) on the option the job would take now, so giving up the wait is always
  still possible.
* The timeout policies (constant, runtime, compute) do not predict: they wait until their limit or
  until capacity frees, whichever comes first, exactly as in Starburst. Only the deadline rule relies
  on predictions, and it reserves the predicted capacity so that two waiting jobs never count on the
  same freed GPUs (first come first served in the placer's job order, i.e. priority tier first; a
  reservation is advisory: every cycle decides again from the current snapshot).
* The timeline covers node-bound (on-prem) pools only; cloud pools are elastic and a full cloud quota
  is never predicted to free.

Usage from a placer (see placers/greedy.py):

    planner = WaitPlanner(problem)
    ...                                  # job j would take option o now (its pool has room)
    wait = planner.consider(j, o, capacity)
    if wait is not None: decisions.append(wait)            # leave o free for others
    else: capacity.take(...); planner.note_taken(pool, demand, bindings)
"""

from __future__ import annotations

import enum
import math
import operator
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from placers.capacity import CapacityState, Demand
from placers.catalog import Catalog
from placers.domain import NodeBinding, Placement, UnixSeconds
from placers.explain import clock_text
from placers.problem import PERMANENT, PlacementProblem, Reason
from placers.result import Decision

_A = TypeVar("_A", bound=npt.NDArray[np.generic])


class WaitPolicy(enum.StrEnum):
    NO_WAIT = "no-wait"
    CONSTANT = "constant"
    RUNTIME = "runtime"
    COMPUTE = "compute"
    DEADLINE = "deadline"


@dataclass(frozen=True, slots=True)
class WaitRule:
    """Which waiting policy applies and its parameters (see the module docstring)."""

    policy: WaitPolicy = WaitPolicy.DEADLINE
    fallback: WaitPolicy = WaitPolicy.NO_WAIT  # for jobs without a deadline under the deadline rule
    constant_s: float = 3600.0
    factor: float = 1.0
    margin_s: float = 300.0
    min_saving_usd: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "policy", _policy("policy", self.policy))
        object.__setattr__(self, "fallback", _policy("fallback", self.fallback))
        if self.fallback is WaitPolicy.DEADLINE:
            raise ValueError("fallback: must be no-wait, constant, runtime or compute (for jobs without a deadline)")
        for name in ("constant_s", "factor", "margin_s", "min_saving_usd"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")

    def policy_for(self, has_deadline: bool) -> WaitPolicy:
        if self.policy is WaitPolicy.DEADLINE and not has_deadline:
            return self.fallback
        return self.policy

    def timeout_at(self, policy: WaitPolicy, submitted_at: float, runtime_s: float, gpus: float) -> float:
        """Until when a timeout policy lets a job wait (no cap for the deadline rule: it predicts)."""
        if policy is WaitPolicy.CONSTANT:
            return submitted_at + self.constant_s
        if policy is WaitPolicy.RUNTIME:
            return submitted_at + self.factor * runtime_s
        if policy is WaitPolicy.COMPUTE:
            return submitted_at + self.factor * runtime_s * gpus
        if policy is WaitPolicy.DEADLINE:
            return math.inf
        return submitted_at


def _policy(name: str, value: object) -> WaitPolicy:
    try:
        return WaitPolicy(str(value))
    except ValueError:
        known = ", ".join(p.value for p in WaitPolicy)
        raise ValueError(f"{name}: unknown waiting policy {value!r}; known: {known}") from None


# ------------------------------------------------------------------------------------------ timeline


@dataclass(frozen=True, slots=True)
class Release:
    """GPUs a placed or running job is expected to give back at `at`."""

    at: UnixSeconds
    job_id: str
    bindings: tuple[NodeBinding, ...]

    @property
    def milli(self) -> int:
        return sum(len(b.gpu_slots) * b.gpu_milli for b in self.bindings)


@dataclass(frozen=True)
class ReleaseTimeline:
    """Per node-bound pool (catalog pool index), the expected releases after `now`, in time order."""

    now: UnixSeconds
    releases: Mapping[int, tuple[Release, ...]]

    @classmethod
    def empty(cls, now: UnixSeconds = 0.0) -> ReleaseTimeline:
        return cls(now, {})

    @classmethod
    def from_allocations(
        cls, catalog: Catalog, allocations: Mapping[str, Placement], now: UnixSeconds
    ) -> ReleaseTimeline:
        """From the store snapshot's allocations (job id -> placement with finish_at and bindings).

        Services (no finish_at) never release; a job already past its expected finish is left out
        (when it ends is unknown), so predictions only err on the late side."""
        return cls(now, _Releases(catalog, allocations, now))

    def of(self, pool: int) -> tuple[Release, ...]:
        return self.releases.get(pool, ())

    def any_release(self) -> bool:
        """Is any release expected at all (without sorting the timeline when it is not built yet)?"""
        if isinstance(self.releases, _Releases):
            return self.releases.any_release()
        return any(self.releases.values())

    def first_fit_at(self, capacity: CapacityState, pool: int, demand: Demand) -> UnixSeconds | None:
        """The earliest expected time `demand` fits `pool`, starting from `capacity` (None: not in view)."""
        if capacity.find(pool, demand) is not None:
            return self.now
        scratch = _PoolFuture(capacity, pool, self.of(pool))
        found = scratch.earliest(demand)
        return None if found is None else found[0]


_RELEASE_ORDER = operator.attrgetter("at", "job_id")  # job ids are unique: a total order


class _Releases(Mapping[int, tuple[Release, ...]]):
    """Pool -> releases, sorted by (time, job id); worked out on first use, since most cycles
    never consult the timeline (nothing waits) while the store may hold thousands of jobs."""

    def __init__(self, catalog: Catalog, allocations: Mapping[str, Placement], now: UnixSeconds) -> None:
        self._source: tuple[Catalog, Mapping[str, Placement], UnixSeconds] | None = (catalog, allocations, now)
        self._by_pool: dict[int, tuple[Release, ...]] = {}

    def _built(self) -> dict[int, tuple[Release, ...]]:
        if self._source is not None:
            catalog, allocations, now = self._source
            per_pool: dict[int, list[Release]] = {}
            for job_id, p in allocations.items():
                if p.finish_at is None or p.finish_at <= now or not p.bindings:
                    continue
                index = catalog.pool_index.get(f"{p.site}/{p.pool}")
                if index is None or catalog.pools[index].elastic:
                    continue
                per_pool.setdefault(index, []).append(Release(p.finish_at, job_id, p.bindings))
            self._by_pool = {k: tuple(sorted(v, key=_RELEASE_ORDER)) for k, v in sorted(per_pool.items())}
            self._source = None
        return self._by_pool

    def any_release(self) -> bool:
        if self._source is None:
            return any(self._by_pool.values())
        catalog, allocations, now = self._source
        for p in allocations.values():
            if p.finish_at is None or p.finish_at <= now or not p.bindings:
                continue
            index = catalog.pool_index.get(f"{p.site}/{p.pool}")
            if index is not None and not catalog.pools[index].elastic:
                return True
        return False

    def __getitem__(self, pool: int) -> tuple[Release, ...]:
        return self._built()[pool]

    def __iter__(self) -> Iterator[int]:
        return iter(self._built())

    def __len__(self) -> int:
        return len(self._built())


class _PoolFuture:
    """One pool's capacity as time moves forward through its releases, with reservations taken out.

    `state` holds the pool at `cursor_at` (releases before `cursor` applied); other pools of the
    state are shared with the source and never written."""

    def __init__(self, capacity: CapacityState, pool: int, releases: tuple[Release, ...]) -> None:
        self.pool = pool
        self.releases = releases
        self.state = _private_pool_copy(capacity, pool)
        self.cursor = 0
        self.cursor_at = -math.inf
        self.version = 0
        self._cache: dict[Demand, tuple[int, tuple[float, int, tuple[NodeBinding, ...]] | None]] = {}
        self._ones = Demand(gpus=1)

    def _apply(self, k: int, sign: int) -> None:
        r = self.releases[k]
        if sign > 0:
            self.state.release(self.pool, self._ones, r.bindings)
        else:
            self.state.take(self.pool, self._ones, r.bindings)

    def earliest(self, demand: Demand) -> tuple[float, int, tuple[NodeBinding, ...]] | None:
        """(time, releases applied up to, bindings) where `demand` first fits from the cursor on."""
        cached = self._cache.get(demand)
        if cached is not None and cached[0] == self.version:
            return cached[1]
        found = self._scan(demand)
        self._cache[demand] = (self.version, found)
        return found

    def _scan(self, demand: Demand) -> tuple[float, int, tuple[NodeBinding, ...]] | None:
        need = demand.total_milli
        free = self.state.free_milli(self.pool)
        k = self.cursor
        applied: list[int] = []
        found: tuple[float, int, tuple[NodeBinding, ...]] | None = None
        try:
            while k < len(self.releases):
                at = self.releases[k].at
                while k < len(self.releases) and self.releases[k].at == at:
                    self._apply(k, +1)
                    applied.append(k)
                    free += self.releases[k].milli
                    k += 1
                if free >= need:
                    bindings = self.state.find(self.pool, demand)
                    if bindings is not None:
                        found = (at, k, bindings)
                        break
        finally:
            for i in reversed(applied):
                self._apply(i, -1)
        return found

    def reserve(self, demand: Demand, upto: int, at: float, bindings: tuple[NodeBinding, ...]) -> None:
        """Move the cursor to `at` and hold `bindings` from then on."""
        while self.cursor < upto:
            self._apply(self.cursor, +1)
            self.cursor += 1
        self.cursor_at = max(self.cursor_at, at)
        self.state.take(self.pool, demand, bindings)
        self.version += 1

    def taken_now(self, demand: Demand, bindings: tuple[NodeBinding, ...], sign: int) -> None:
        """A placement made (or undone) now also holds its GPUs in every later state."""
        if sign < 0:
            self.state.take(self.pool, demand, bindings)
        else:
            self.state.release(self.pool, demand, bindings)
        self.version += 1


def _own(arrays: list[_A], i: int) -> list[_A]:
    out = list(arrays)
    out[i] = arrays[i].copy()
    return out


def _private_pool_copy(capacity: CapacityState, pool: int) -> CapacityState:
    return CapacityState(
        capacity.catalog,
        _own(capacity.gpu_free, pool),
        _own(capacity.cpu_free, pool),
        _own(capacity.mem_free, pool),
        capacity.elastic_free.copy(),
        capacity.site_quota_free.copy(),
    )


# ------------------------------------------------------------------------------------------ planner


class WaitPlanner:
    """Applies the problem's `WaitRule` for one placement pass. One instance per `place()` call."""

    def __init__(self, problem: PlacementProblem, score: npt.NDArray[np.float64] | None = None) -> None:
        """`score` [jobs, options] ranks options ("cheaper"); default the problem's total USD."""
        self.problem = problem
        self.rule: WaitRule = problem.settings.waiting or WaitRule()
        self.timeline: ReleaseTimeline = problem.release or ReleaseTimeline.empty(problem.now)
        self._futures: dict[int, _PoolFuture] = {}
        has_deadline = np.isfinite(problem.deadline_at)
        self._policies = [self.rule.policy_for(bool(x)) for x in has_deadline]
        # Only the deadline rule looks ahead; whether anything will free is asked only then.
        self._predicts = any(p is WaitPolicy.DEADLINE for p in self._policies) and self.timeline.any_release()
        # the deadline rule needs a prediction: without releases in view nobody can wait under it
        self.active = any(
            p is not WaitPolicy.NO_WAIT and (p is not WaitPolicy.DEADLINE or self._predicts) for p in self._policies
        )
        blocking = int(PERMANENT | Reason.SITE_UNAVAILABLE | Reason.BUDGET)
        self._eligible = (problem.reasons & blocking) == 0 if self.active else None
        self._score = (problem.total_usd if score is None else score) if self.active else None
        self._deferred = int(Reason.DEFERRED)
        self.deferred = 0

    def policy(self, j: int) -> WaitPolicy:
        return self._policies[j]

    def consider(self, j: int, now_option: int, capacity: CapacityState) -> Decision | None:
        """Should job j wait instead of taking `now_option` (which has room in `capacity`)?"""
        policy = self._policies[j]
        if policy is WaitPolicy.NO_WAIT or now_option < 0 or self._eligible is None or self._score is None:
            return None
        if policy is WaitPolicy.DEADLINE and not self._predicts:
            return None
        p = self.problem
        total = self._score[j]
        cheaper = np.flatnonzero(self._eligible[j] & (total < total[now_option] - self.rule.min_saving_usd - 1e-9))
        if len(cheaper) == 0:
            return None
        demand = p.demands[j]
        cheaper = cheaper[np.lexsort((cheaper, total[cheaper]))]
        blocked = [int(o) for o in cheaper if capacity.find(int(p.options.pool[o]), demand) is None]
        if not blocked:
            return None
        deadline = float(p.deadline_at[j])
        latest_now = self._latest_burst(j, now_option, capacity, deadline)
        spec = p.specs[j]
        if policy is not WaitPolicy.DEADLINE:
            until = min(
                self.rule.timeout_at(policy, float(p.submitted_at[j]), spec.runtime_s, spec.total_gpus),
                latest_now,
            )
            if until <= p.now:
                return None
            o = blocked[0]
            note = (
                f"waiting for {p.option_label(o)} (${total[now_option] - total[o]:,.2f} cheaper than "
                f"{p.option_label(now_option)} now; {policy.value} wait until {_clock(until)})"
            )
            return self._defer(j, note, until)
        for o in blocked:
            pool = int(p.options.pool[o])
            if p.catalog.pools[pool].elastic:
                continue
            future = self._future(pool, capacity)
            found = future.earliest(demand)
            if found is None:
                continue
            at, upto, bindings = found
            at = max(at, future.cursor_at)
            if at <= p.now or at > latest_now:
                continue
            if at + float(p.transfer_s[j, o] + p.runtime_s[j, o]) > deadline - self.rule.margin_s:
                continue
            future.reserve(demand, upto, at, bindings)
            note = (
                f"waiting for {p.option_label(o)}: full until {_clock(at)}, then finishes before the deadline "
                f"{_clock(deadline)} for ${total[now_option] - total[o]:,.2f} less than "
                f"{p.option_label(now_option)} now (bursts there by {_clock(latest_now)} at the latest)"
            )
            return self._defer(j, note, at)
        return None

    def _latest_burst(self, j: int, now_option: int, capacity: CapacityState, deadline: float) -> float:
        """The last moment job j could still start on an option that has room now and meet its deadline.

        Not only `now_option`: a job placed on a slow, cheap GPU now may still burst later onto a faster
        one, so the wait lasts until the latest of the fallbacks that are free now."""
        p = self.problem
        finish = p.transfer_s[j] + p.runtime_s[j]
        best = deadline - float(finish[now_option])
        if math.isfinite(deadline) and self._eligible is not None:
            demand = p.demands[j]
            for o in np.flatnonzero(self._eligible[j] & (deadline - finish > best)).tolist():
                slack = deadline - float(finish[o])
                if slack > best and capacity.find(int(p.options.pool[o]), demand) is not None:
                    best = slack
        return best - self.rule.margin_s

    def note_taken(self, pool: int, demand: Demand, bindings: tuple[NodeBinding, ...]) -> None:
        """The placer took capacity now; reservations made earlier must not count on it."""
        future = self._futures.get(pool)
        if future is not None:
            future.taken_now(demand, bindings, -1)

    def note_released(self, pool: int, demand: Demand, bindings: tuple[NodeBinding, ...]) -> None:
        future = self._futures.get(pool)
        if future is not None:
            future.taken_now(demand, bindings, +1)

    def _future(self, pool: int, capacity: CapacityState) -> _PoolFuture:
        future = self._futures.get(pool)
        if future is None:
            future = self._futures[pool] = _PoolFuture(capacity, pool, self.timeline.of(pool))
        return future

    def _defer(self, j: int, note: str, retry_at: float) -> Decision:
        self.deferred += 1
        return Decision(job=j, reason=self._deferred, note=note, retry_at=retry_at)


def _clock(t: float) -> str:
    return clock_text(t)
