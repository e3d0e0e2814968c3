"""What a job has cost, derived from its durable record alone (no second source of truth).

A job's bill is a set of *segments* (GPU time held by each attempt, from launch to end, at the
price its placement got) plus one *charge* for the data its placement moved (egress) and the
cached replica it created (storage for the replica's time-to-live, charged when the copy is
made). Everything is priced from the job's own `Placement`: its compute estimate divided by the
runtime it was estimated for gives the USD per second it pays, so a price change in the
catalog never rewrites history.

Known approximations, all from what a `Job` records:
- Earlier attempts of a retried job are priced at `CostParams.site_usd_per_gpu_hour` for their
  site when given (else at the current placement's rate); only the latest placement's egress
  and storage are known.
- Only the first attempt's start is recorded (`Job.started_at`), so placed-but-not-running time
  is measured for the first attempt and for a job still placed now.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from placers.domain import Job, JobKind, JobState, Placement, UnixSeconds
from scheduler.finops.periods import Period, month_of, months_between

DEFAULT_SERVICE_HORIZON_S = 30 * 86400.0
_INF = float("inf")


@dataclass(frozen=True, slots=True)
class CostParams:
    service_horizon_s: float = DEFAULT_SERVICE_HORIZON_S  # what a service's compute estimate covers
    site_usd_per_gpu_hour: Mapping[str, float] = field(default_factory=dict)  # for unpriced earlier attempts


class Costs(NamedTuple):
    """Additive cost figures of a job, or of a group of jobs, within a period.

    Costs, segments, charges and accruals are NamedTuples rather than frozen dataclasses: the
    ledger builds several per job event, and a frozen dataclass costs several times more to make."""

    compute_usd: float = 0.0
    egress_usd: float = 0.0
    storage_usd: float = 0.0
    gpu_hours: float = 0.0  # GPU-hours held (GPU-equivalents for shared GPUs)
    idle_gpu_hours: float = 0.0  # of which placed but not running
    dedicated_gpu_hours: float = 0.0  # of which on dedicated pools (known only where the pool is)

    @property
    def total_usd(self) -> float:
        return self.compute_usd + self.egress_usd + self.storage_usd

    def __add__(self, o: Costs) -> Costs:  # type: ignore[override]
        return Costs(
            self.compute_usd + o.compute_usd,
            self.egress_usd + o.egress_usd,
            self.storage_usd + o.storage_usd,
            self.gpu_hours + o.gpu_hours,
            self.idle_gpu_hours + o.idle_gpu_hours,
            self.dedicated_gpu_hours + o.dedicated_gpu_hours,
        )

    def __sub__(self, o: Costs) -> Costs:
        return Costs(
            self.compute_usd - o.compute_usd,
            self.egress_usd - o.egress_usd,
            self.storage_usd - o.storage_usd,
            self.gpu_hours - o.gpu_hours,
            self.idle_gpu_hours - o.idle_gpu_hours,
            self.dedicated_gpu_hours - o.dedicated_gpu_hours,
        )

    @property
    def zero(self) -> bool:
        return not (self.total_usd or self.gpu_hours)


ZERO = Costs()


class Segment(NamedTuple):
    """GPUs held by one attempt over [start, end); end None while it still holds them."""

    start: UnixSeconds
    end: UnixSeconds | None
    gpus: float
    usd_per_s: float
    running_from: UnixSeconds | None  # when the work started (None: never, so far)
    site: str
    pool: str = ""  # known for the attempt of the current placement
    dedicated: bool = False


class Charge(NamedTuple):
    """A one-off cost at `at`: moving the datasets (egress) and keeping the copy (storage)."""

    at: UnixSeconds
    egress_usd: float
    storage_usd: float


class Accrual(NamedTuple):
    segments: tuple[Segment, ...] = ()
    charges: tuple[Charge, ...] = ()
    projected_compute_usd: float = 0.0  # the current placement's compute estimate (for commitments)

    @property
    def open(self) -> bool:
        return any(s.end is None for s in self.segments)

    def costs(self, period: Period, now: UnixSeconds) -> Costs:
        """Cost accrued inside `period` up to `now`."""
        compute = gpu_h = idle_h = ded_h = 0.0
        for s in self.segments:
            end = now if s.end is None else min(s.end, now)
            held = period.overlap_s(s.start, end)
            if held <= 0:
                continue
            compute += held * s.usd_per_s
            hours = held * s.gpus / 3600.0
            gpu_h += hours
            if s.dedicated:
                ded_h += hours
            idle_until = end if s.running_from is None else min(s.running_from, end)
            idle = period.overlap_s(s.start, idle_until)
            idle_h += idle * s.gpus / 3600.0
        egress = storage = 0.0
        for c in self.charges:
            if c.at <= now and period.contains(c.at):
                egress += c.egress_usd
                storage += c.storage_usd
        return Costs(compute, egress, storage, gpu_h, idle_h, ded_h)

    def total(self, now: UnixSeconds) -> Costs:
        return self.costs(Period("all", float("-inf"), float("inf")), now)

    def committed_usd(self, now: UnixSeconds) -> float:
        """Projected cost still to come for the attempt holding capacity now (0 when none does)."""
        current = next((s for s in self.segments if s.end is None), None)
        if current is None:
            return 0.0
        accrued = max(0.0, now - current.start) * current.usd_per_s
        future = sum(c.egress_usd + c.storage_usd for c in self.charges if c.at > now)
        return max(0.0, self.projected_compute_usd - accrued) + future

    def span(self) -> tuple[UnixSeconds, UnixSeconds] | None:
        """First and last instant with a cost (None when there is none); open segments end at +inf."""
        lo, hi = _INF, -_INF
        for seg in self.segments:
            lo = min(lo, seg.start)
            hi = max(hi, _INF if seg.end is None else seg.end)
        for c in self.charges:
            lo = min(lo, c.at)
            hi = max(hi, c.at)
        return None if lo == _INF else (lo, hi)

    def monthly(self, now: UnixSeconds) -> dict[str, Costs]:
        """Costs by calendar month (label -> Costs) up to `now`; only months with a cost."""
        span = self.span()
        if span is None:
            return {}
        first = month_of(span[0])
        if min(span[1], now) < first.end:  # the usual case: all in one month
            c = self.costs(first, now)
            return {} if c.zero else {first.label: c}
        out: dict[str, Costs] = {}
        for month in months_between(span[0], min(span[1], now) + 1e-9):
            c = self.costs(month, now)
            if not c.zero:
                out[month.label] = c
        return out


def usd_per_s(placement: Placement, kind: JobKind, params: CostParams) -> float:
    """The USD per second of held GPUs the placement's estimate was priced at."""
    if placement.finish_at is None or kind is JobKind.INFERENCE:
        planned = params.service_horizon_s
    else:
        planned = placement.finish_at - placement.start_at - placement.transfer_s
    return placement.cost.compute_usd / planned if planned > 0 else 0.0


def accrual(job: Job, params: CostParams, dedicated_pools: frozenset[str] = frozenset()) -> Accrual:
    """The job's segments and charges, from its record. `dedicated_pools` are 'site/pool' keys."""
    if not job.attempts:
        return Accrual()
    spec = job.spec
    gpus = spec.total_gpus * spec.gpu_milli / 1000.0
    placement = job.placement
    current_rate = usd_per_s(placement, spec.kind, params) if placement is not None else 0.0
    last = len(job.attempts) - 1
    segments: list[Segment] = []
    for i, a in enumerate(job.attempts):
        priced_by_placement = placement is not None and i == last
        if priced_by_placement or (placement is not None and a.site == placement.site):
            rate = current_rate
        elif a.site in params.site_usd_per_gpu_hour:
            rate = gpus * params.site_usd_per_gpu_hour[a.site] / 3600.0
        else:
            rate = current_rate
        if i == 0:
            running_from = job.started_at
        elif i == last and job.state is JobState.PLACED:
            running_from = None
        else:
            running_from = a.launched_at  # later attempts: their start is not recorded
        pool = placement.pool if priced_by_placement and placement is not None else ""
        segments.append(
            Segment(
                start=a.launched_at,
                end=a.ended_at,
                gpus=gpus,
                usd_per_s=rate,
                running_from=running_from,
                site=a.site,
                pool=pool,
                dedicated=bool(dedicated_pools) and f"{a.site}/{pool}" in dedicated_pools,
            )
        )
    charges: tuple[Charge, ...] = ()
    if placement is not None:
        ended = job.attempts[-1].ended_at
        made = ended is None or ended >= placement.start_at  # a copy is made once the placement starts
        if made and (placement.cost.egress_usd or placement.cost.storage_usd):
            charges = (Charge(placement.start_at, placement.cost.egress_usd, placement.cost.storage_usd),)
    projected = placement.cost.compute_usd if placement is not None else 0.0
    return Accrual(tuple(segments), charges, projected)
