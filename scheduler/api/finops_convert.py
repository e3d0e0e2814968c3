"""The only mapping between gravity.v1 FinOps messages and the FinOps domain (scheduler.finops)."""

from __future__ import annotations

from collections.abc import Sequence

from gravity.v1 import finops_pb2 as fpb
from placers.domain import CostBreakdown
from scheduler.api.convert import cost_to_proto, from_ts, ts
from scheduler.finops.budgets import BudgetStatus
from scheduler.finops.costing import Costs
from scheduler.finops.model import (
    DEFAULT_THRESHOLDS,
    AuditEntry,
    AuditKind,
    BreachPolicy,
    Budget,
    BudgetAlert,
    BudgetPeriod,
    InvalidBudget,
)
from scheduler.finops.periods import Period
from scheduler.finops.showback import PoolUse, Showback, ShowbackRow

POLICY_TO_PB = {
    BreachPolicy.REJECT: fpb.BREACH_POLICY_REJECT,
    BreachPolicy.HOLD: fpb.BREACH_POLICY_HOLD,
    BreachPolicy.ALERT: fpb.BREACH_POLICY_ALERT,
}
POLICY_FROM_PB = {v: k for k, v in POLICY_TO_PB.items()}
POLICY_FROM_PB[fpb.BREACH_POLICY_UNSPECIFIED] = BreachPolicy.HOLD


# ---------------------------------------------------------------------- budgets


def budget_from_proto(m: fpb.Budget, default_thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> Budget:
    """Decode and validate; InvalidBudget names the field (without the 'budget.' prefix)."""
    if m.on_breach not in POLICY_FROM_PB:
        raise InvalidBudget("on_breach", "must be BREACH_POLICY_REJECT, BREACH_POLICY_HOLD or BREACH_POLICY_ALERT")
    if m.period and m.period not in {p.value for p in BudgetPeriod}:
        raise InvalidBudget("period", f"unknown period {m.period!r} (known: month)")
    if m.id and m.id != f"{m.tag}={m.value}":
        raise InvalidBudget("id", f"is output only; it is '<tag>=<value>' ({m.tag}={m.value}), got {m.id!r}")
    budget = Budget(
        tag=m.tag,
        value=m.value,
        amount_usd=m.amount_usd,
        on_breach=POLICY_FROM_PB[m.on_breach],
        thresholds=tuple(m.thresholds) or tuple(default_thresholds),
        period=BudgetPeriod(m.period or BudgetPeriod.MONTH),
    )
    budget.validate()
    return budget


def budget_to_proto(b: Budget) -> fpb.Budget:
    m = fpb.Budget(
        id=b.id,
        tag=b.tag,
        value=b.value,
        amount_usd=b.amount_usd,
        period=str(b.period),
        on_breach=POLICY_TO_PB[b.on_breach],
        thresholds=b.thresholds,
        version=b.version,
        updated_by=b.updated_by,
    )
    if b.updated_at:
        m.updated_at.CopyFrom(ts(b.updated_at))
    return m


def status_to_proto(s: BudgetStatus, fired: Sequence[float] = ()) -> fpb.BudgetStatus:
    a = s.accrued
    return fpb.BudgetStatus(
        budget=budget_to_proto(s.budget),
        period=s.period.label,
        accrued=cost_to_proto(_breakdown(a)),
        committed_usd=s.committed_usd,
        spend_usd=s.spend_usd,
        remaining_usd=s.remaining_usd,
        spend_ratio=s.share,
        fired_thresholds=sorted(fired),
    )


def alert_to_proto(a: BudgetAlert) -> fpb.BudgetAlert:
    m = fpb.BudgetAlert(
        seq=a.seq,
        budget_id=a.budget_id,
        period=a.period,
        threshold=a.threshold,
        amount_usd=a.amount_usd,
        accrued_usd=a.accrued_usd,
        committed_usd=a.committed_usd,
        spend_usd=a.spend_usd,
        on_breach=POLICY_TO_PB[a.on_breach],
        message=a.message,
    )
    m.at.CopyFrom(ts(a.at))
    return m


def alert_from_proto(m: fpb.BudgetAlert) -> BudgetAlert:
    return BudgetAlert(
        budget_id=m.budget_id,
        period=m.period,
        threshold=m.threshold,
        amount_usd=m.amount_usd,
        accrued_usd=m.accrued_usd,
        committed_usd=m.committed_usd,
        on_breach=POLICY_FROM_PB[m.on_breach],
        at=from_ts(m.at),
        seq=m.seq,
    )


# ---------------------------------------------------------------------- cost report


def _breakdown(c: Costs) -> CostBreakdown:
    return CostBreakdown(c.compute_usd, c.egress_usd, c.storage_usd)


def _row_to_proto(r: ShowbackRow) -> fpb.CostRow:
    c = r.costs
    return fpb.CostRow(
        group=r.group,
        jobs=r.jobs,
        cost=cost_to_proto(_breakdown(c)),
        gpu_hours=c.gpu_hours,
        usd_per_gpu_hour=r.usd_per_gpu_hour,
        usd_per_job=r.usd_per_job,
        idle_gpu_hours=c.idle_gpu_hours,
        dedicated_gpu_hours=c.dedicated_gpu_hours,
        flags=r.flags,
    )


def _row_from_proto(m: fpb.CostRow) -> ShowbackRow:
    costs = Costs(
        compute_usd=m.cost.compute_usd,
        egress_usd=m.cost.egress_usd,
        storage_usd=m.cost.storage_usd,
        gpu_hours=m.gpu_hours,
        idle_gpu_hours=m.idle_gpu_hours,
        dedicated_gpu_hours=m.dedicated_gpu_hours,
    )
    return ShowbackRow(tuple(m.group), m.jobs, costs, tuple(m.flags))


def showback_to_proto(r: Showback) -> fpb.CostReportResponse:
    m = fpb.CostReportResponse(
        by=r.by,
        period=r.period.label,
        rows=[_row_to_proto(x) for x in r.rows],
        total=_row_to_proto(r.total),
        pools=[
            fpb.PoolUse(
                site=p.site,
                pool=p.pool,
                dedicated=p.dedicated,
                capacity_gpu_hours=p.capacity_gpu_hours,
                used_gpu_hours=p.used_gpu_hours,
                utilisation=p.utilisation,
                underused=p.flagged,
            )
            for p in r.pools
        ],
        where=dict(r.where),
    )
    m.start.CopyFrom(ts(r.period.start))
    m.end.CopyFrom(ts(r.period.end))
    m.as_of.CopyFrom(ts(r.as_of))
    return m


def showback_from_proto(m: fpb.CostReportResponse) -> Showback:
    """Back to the domain report (the CLI renders CSV and JSON with scheduler.finops.showback)."""
    return Showback(
        by=tuple(m.by),
        period=Period(m.period, from_ts(m.start), from_ts(m.end)),
        as_of=from_ts(m.as_of),
        rows=tuple(_row_from_proto(x) for x in m.rows),
        total=_row_from_proto(m.total),
        pools=tuple(
            PoolUse(p.site, p.pool, p.dedicated, p.capacity_gpu_hours, p.used_gpu_hours, p.underused) for p in m.pools
        ),
        where=dict(m.where),
    )


# ---------------------------------------------------------------------- audit


def audit_to_proto(e: AuditEntry) -> fpb.AuditEntry:
    m = fpb.AuditEntry(
        seq=e.seq,
        kind=str(e.kind),
        job_id=e.job_id,
        reason=e.reason,
        actor=e.actor,
        site=e.site,
        tags=dict(e.tags),
    )
    m.at.CopyFrom(ts(e.at))
    return m


def audit_from_proto(m: fpb.AuditEntry) -> AuditEntry:
    return AuditEntry(
        at=from_ts(m.at),
        kind=AuditKind(m.kind),
        reason=m.reason,
        job_id=m.job_id,
        actor=m.actor,
        site=m.site,
        tags=dict(m.tags),
        seq=m.seq,
    )
