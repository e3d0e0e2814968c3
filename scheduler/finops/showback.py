"""Showback and chargeback: who spent what in a period, by any tag, from job records alone.

`showback(jobs, by, period, now)` is a pure function: the CostReport RPC runs it over the
store's jobs and the simulator over a replay's jobs, so both report the same figures. Costs
come from `costing.accrual` (the same numbers the ledger and the budgets use).

Reservations that sat idle are flagged two ways:
- per row: GPU-hours that were placed but not running (paid, unused), above `idle_share`;
- per pool (when a catalog is given): fixed capacity, on-prem and dedicated inference pools,
  paid whether used or not, whose use in the period fell below `underused_share`; a row that
  holds dedicated capacity in such a pool is flagged too.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from placers.catalog import Catalog
from placers.domain import Job, UnixSeconds
from scheduler.finops.costing import ZERO, CostParams, Costs, accrual
from scheduler.finops.periods import Period

UNTAGGED = "(untagged)"


@dataclass(frozen=True, slots=True)
class FlagThresholds:
    idle_share: float = 0.10  # flag a row whose placed-but-not-running share of GPU-hours is at least this
    idle_min_gpu_hours: float = 0.01  # ... and at least this many GPU-hours
    underused_share: float = 0.30  # flag a fixed-capacity pool used less than this share of the period


@dataclass(frozen=True, slots=True)
class ShowbackRow:
    group: tuple[str, ...]  # the values of the `by` tags
    jobs: int  # jobs with a cost in the period
    costs: Costs
    flags: tuple[str, ...] = ()

    @property
    def usd_per_gpu_hour(self) -> float:
        return self.costs.total_usd / self.costs.gpu_hours if self.costs.gpu_hours > 0 else 0.0

    @property
    def usd_per_job(self) -> float:
        return self.costs.total_usd / self.jobs if self.jobs else 0.0


@dataclass(frozen=True, slots=True)
class PoolUse:
    """A fixed-capacity pool's use in the period (capacity counted up to `as_of`)."""

    site: str
    pool: str
    dedicated: bool
    capacity_gpu_hours: float
    used_gpu_hours: float
    flagged: bool

    @property
    def utilisation(self) -> float:
        return self.used_gpu_hours / self.capacity_gpu_hours if self.capacity_gpu_hours > 0 else 0.0


@dataclass(frozen=True)
class Showback:
    by: tuple[str, ...]
    period: Period
    as_of: UnixSeconds
    rows: tuple[ShowbackRow, ...]  # most expensive first
    total: ShowbackRow
    pools: tuple[PoolUse, ...] = ()
    where: Mapping[str, str] = field(default_factory=dict)


def showback(
    jobs: Iterable[Job],
    by: Sequence[str],
    period: Period,
    now: UnixSeconds,
    *,
    params: CostParams | None = None,
    catalog: Catalog | None = None,
    where: Mapping[str, str] | None = None,
    thresholds: FlagThresholds | None = None,
) -> Showback:
    """Spend in `period` (as of `now`) grouped by the values of the `by` tags."""
    if not by:
        raise ValueError("by: name at least one tag to group by")
    params = params or CostParams()
    thresholds = thresholds or FlagThresholds()
    where = dict(where or {})
    fixed = {p.key: p for p in catalog.pools if not p.elastic or p.dedicated} if catalog else {}
    dedicated = frozenset(k for k, p in fixed.items() if p.dedicated)
    groups: dict[tuple[str, ...], Costs] = {}
    counts: dict[tuple[str, ...], int] = {}
    pool_used: dict[str, float] = {}
    pools_of_group: dict[tuple[str, ...], set[str]] = {}
    for job in jobs:
        tags = job.spec.tags
        if any(tags.get(k) != v for k, v in where.items()):
            continue
        acc = accrual(job, params, dedicated)
        span = acc.span()
        if span is None or span[0] >= period.end or span[1] < period.start:
            continue
        cost = acc.costs(period, now)
        if cost.zero:
            continue
        group = tuple(tags.get(k) or UNTAGGED for k in by)
        groups[group] = groups.get(group, ZERO) + cost
        counts[group] = counts.get(group, 0) + 1
        for s in acc.segments:
            key = f"{s.site}/{s.pool}"
            if key in fixed:
                end = now if s.end is None else min(s.end, now)
                pool_used[key] = pool_used.get(key, 0.0) + period.overlap_s(s.start, end) * s.gpus / 3600.0
                if s.dedicated:
                    pools_of_group.setdefault(group, set()).add(key)
    elapsed_h = period.overlap_s(period.start, now) / 3600.0
    pools: list[PoolUse] = []
    for key, p in fixed.items():
        capacity = p.max_gpus * elapsed_h
        used = pool_used.get(key, 0.0)
        flagged = capacity > 0 and used / capacity < thresholds.underused_share
        pools.append(PoolUse(p.site, p.name, p.dedicated, capacity, used, flagged))
    underused = {f"{u.site}/{u.pool}": u for u in pools if u.flagged}
    rows = []
    for group, cost in groups.items():
        flags: list[str] = []
        if (
            cost.gpu_hours > 0
            and cost.idle_gpu_hours >= thresholds.idle_min_gpu_hours
            and cost.idle_gpu_hours / cost.gpu_hours >= thresholds.idle_share
        ):
            flags.append(
                f"idle reservation: {cost.idle_gpu_hours:,.2f} of {cost.gpu_hours:,.2f} GPU-h placed but not running"
            )
        for key in sorted(pools_of_group.get(group, ())):
            if key in underused:
                flags.append(f"dedicated capacity underused: {key} {underused[key].utilisation:.0%} used")
        rows.append(ShowbackRow(group, counts[group], cost, tuple(flags)))
    rows.sort(key=lambda r: (-r.costs.total_usd, r.group))
    total_cost = sum((r.costs for r in rows), ZERO)
    total = ShowbackRow(("TOTAL",) * len(by), sum(r.jobs for r in rows), total_cost)
    return Showback(tuple(by), period, now, tuple(rows), total, tuple(pools), where)


# ---------------------------------------------------------------------- output

CSV_NUMERIC = (
    "jobs",
    "compute_usd",
    "egress_usd",
    "storage_usd",
    "total_usd",
    "gpu_hours",
    "usd_per_gpu_hour",
    "usd_per_job",
    "idle_gpu_hours",
    "dedicated_gpu_hours",
)


def row_values(r: ShowbackRow) -> dict[str, float]:
    c = r.costs
    return {
        "jobs": r.jobs,
        "compute_usd": round(c.compute_usd, 2),
        "egress_usd": round(c.egress_usd, 2),
        "storage_usd": round(c.storage_usd, 2),
        "total_usd": round(c.total_usd, 2),
        "gpu_hours": round(c.gpu_hours, 3),
        "usd_per_gpu_hour": round(r.usd_per_gpu_hour, 4),
        "usd_per_job": round(r.usd_per_job, 2),
        "idle_gpu_hours": round(c.idle_gpu_hours, 3),
        "dedicated_gpu_hours": round(c.dedicated_gpu_hours, 3),
    }


def to_csv(report: Showback) -> str:
    """One header line, then a row per group: tag columns, the numeric columns, the period, flags."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")  # RFC 4180, what spreadsheets expect
    w.writerow([*report.by, *CSV_NUMERIC, "period", "flags"])
    for r in report.rows:
        values = row_values(r)
        w.writerow([*r.group, *(values[k] for k in CSV_NUMERIC), report.period.label, "; ".join(r.flags)])
    return out.getvalue()


def to_dict(report: Showback) -> dict[str, Any]:
    def row(r: ShowbackRow) -> dict[str, Any]:
        return {"group": dict(zip(report.by, r.group, strict=True)), **row_values(r), "flags": list(r.flags)}

    return {
        "by": list(report.by),
        "period": report.period.label,
        "start": report.period.start,
        "end": report.period.end,
        "as_of": report.as_of,
        "where": dict(report.where),
        "rows": [row(r) for r in report.rows],
        "total": row(report.total),
        "pools": [
            {
                "site": p.site,
                "pool": p.pool,
                "dedicated": p.dedicated,
                "capacity_gpu_hours": round(p.capacity_gpu_hours, 3),
                "used_gpu_hours": round(p.used_gpu_hours, 3),
                "utilisation": round(p.utilisation, 4),
                "underused": p.flagged,
            }
            for p in report.pools
        ],
    }
