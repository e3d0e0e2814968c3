"""FinOps governance for one scheduler: the tag taxonomy, budgets and their alerts, the ledger,
the audit trail, reports and metrics, behind the few hooks the scheduling cycle calls.

    taxonomy          admission checks tags against it (scheduler.admission.check_tags)
    budget_state(t)   what each budget has left now: the placer's budget_remaining_usd
    review            the placer's result against every budget (reject / hold / alert)
    audit             the plan's audit entries (committed with it)
    decided, tick     metrics, and alerts when spend crosses a threshold
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace

from placers.capacity import FULL
from placers.catalog import Catalog
from placers.domain import Job
from placers.problem import PlacementProblem
from placers.result import PlacementResult
from scheduler.clock import Clock
from scheduler.finops.alerts import AlertSink
from scheduler.finops.audit import cancel_audit, plan_audit
from scheduler.finops.budgets import HELD_PREFIX, BudgetState, BudgetStatus, Verdict
from scheduler.finops.costing import DEFAULT_SERVICE_HORIZON_S, CostParams, Costs
from scheduler.finops.ledger import Ledger
from scheduler.finops.metrics import Metrics, StateReaders
from scheduler.finops.model import (
    AuditEntry,
    AuditKind,
    AuditQuery,
    BreachPolicy,
    Budget,
    BudgetAlert,
    VersionMismatch,
)
from scheduler.finops.periods import Period, month_of
from scheduler.finops.showback import FlagThresholds, Showback, showback
from scheduler.settings import FinOpsSettings
from scheduler.store.base import JobQuery, Plan, Store

log = logging.getLogger("gravity.finops")

_PAGE = 10_000


class Governance:
    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        clock: Clock,
        settings: FinOpsSettings | None = None,
        *,
        service_horizon_s: float = DEFAULT_SERVICE_HORIZON_S,
        budgets_usd: Mapping[str, float] | None = None,
        budget_tag: str = "cost_center",
        sink: AlertSink | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.clock = clock
        self.settings = settings or FinOpsSettings()
        self.taxonomy = self.settings.tags
        self.params = CostParams(
            service_horizon_s=service_horizon_s,
            site_usd_per_gpu_hour={s.name: min(p.usd_per_gpu_hour for p in s.pools) for s in catalog.sites},
        )
        self.dedicated_pools = frozenset(p.key for p in catalog.pools if p.dedicated)
        self.ledger = Ledger(store, self.params, self.dedicated_pools)
        self.sink = sink or AlertSink(
            self.settings.alert_webhook_url,
            timeout_s=self.settings.webhook_timeout_s,
            retries=self.settings.webhook_retries,
        )
        self.metrics = metrics or Metrics()
        self.metrics.attach(
            StateReaders(
                job_counts=lambda: {str(k): v for k, v in self.store.counts().items()},
                site_gpus=self._site_gpus,
                spend_by_cost_center=self._spend_by_cost_center,
                budgets=lambda: self.statuses(self.clock.now()),
            ),
            self.clock.now,
        )
        self._fired: set[tuple[str, str, float]] = set()  # alerts known to be recorded (the store dedups too)
        self._last_check = -math.inf
        self._recheck = True
        self._follow_ledger = False
        self._cycle_budgets: tuple[float, list[Budget]] | None = None  # (cycle time, budgets it read)
        self._seed(budgets_usd or {}, budget_tag)

    def _seed(self, budgets_usd: Mapping[str, float], budget_tag: str) -> None:
        """Budgets from settings, created when the store has none for their scope."""
        thresholds = tuple(self.settings.default_thresholds)
        wanted = [Budget(budget_tag, v, usd, BreachPolicy.HOLD, thresholds) for v, usd in budgets_usd.items()]
        for b in self.settings.budgets:
            wanted.append(
                Budget(b.tag, b.value, b.amount_usd, BreachPolicy(b.on_breach), tuple(b.thresholds or thresholds))
            )
        for budget in wanted:
            budget.validate()
            if self.store.get_budget(budget.id) is None:
                with contextlib.suppress(VersionMismatch):  # another replica seeded it first
                    self.create_budget(budget, actor="settings")

    # ================================================================== budgets

    def statuses(self, now: float, budgets: Sequence[Budget] | None = None) -> list[BudgetStatus]:
        """Each budget (all, as stored now, unless given) with its spend this month."""
        budgets = self.store.list_budgets() if budgets is None else budgets
        if not budgets:
            return []
        self.ledger.sync()
        month = month_of(now)
        spend = self.ledger.spend(month, {(b.tag, b.value) for b in budgets}, now)
        return [
            BudgetStatus(b, month, spend[(b.tag, b.value)].accrued, spend[(b.tag, b.value)].committed_usd)
            for b in budgets
        ]

    def budget_state(self, now: float) -> BudgetState:
        """What each budget has left now, for a cycle deciding jobs (budgets read once per such cycle)."""
        budgets = self.store.list_budgets()
        self._cycle_budgets = (now, budgets)
        return BudgetState(self.statuses(now, budgets), now)

    def _budgets_at(self, now: float) -> list[Budget]:
        """The budgets the cycle at `now` read, or the stored ones when it read none."""
        if self._cycle_budgets is not None and self._cycle_budgets[0] == now:
            return self._cycle_budgets[1]
        return self.store.list_budgets()

    def create_budget(self, budget: Budget, actor: str) -> Budget:
        budget.validate()
        now = self.clock.now()
        stored = self.store.put_budget(
            replace(budget, updated_at=now, updated_by=actor),
            0,
            audit=AuditEntry(
                now,
                AuditKind.BUDGET_CHANGED,
                f"budget {budget.id} created: {_describe(budget)}",
                actor=actor,
                tags={budget.tag: budget.value},
            ),
        )
        self._recheck = True
        return stored

    def update_budget(self, budget: Budget, expected_version: int, actor: str) -> Budget:
        """Compare-and-set on `expected_version`; 0 = whatever is stored now (last writer wins)."""
        budget.validate()
        current = self.store.get_budget(budget.id)
        if current is None:
            raise VersionMismatch(f"budget {budget.id}", expected_version, 0)
        expected = expected_version or current.version
        now = self.clock.now()
        changes = _changes(current, budget) or "no change"
        stored = self.store.put_budget(
            replace(budget, updated_at=now, updated_by=actor),
            expected,
            audit=AuditEntry(
                now,
                AuditKind.BUDGET_CHANGED,
                f"budget {budget.id} updated: {changes}",
                actor=actor,
                tags={budget.tag: budget.value},
            ),
        )
        self._recheck = True
        return stored

    def delete_budget(self, budget_id: str, expected_version: int, actor: str) -> Budget:
        tag, _, value = budget_id.partition("=")
        now = self.clock.now()
        removed = self.store.delete_budget(
            budget_id,
            expected_version,
            audit=AuditEntry(
                now, AuditKind.BUDGET_CHANGED, f"budget {budget_id} deleted", actor=actor, tags={tag: value}
            ),
        )
        self._recheck = True
        return removed

    # ================================================================== the cycle's hooks

    def review(self, state: BudgetState, problem: PlacementProblem, result: PlacementResult) -> Verdict:
        return state.review(problem, result)

    def audit(
        self, problem: PlacementProblem, plan: Plan, verdict: Verdict, jobs: Mapping[str, Job], now: float
    ) -> tuple[AuditEntry, ...]:
        return plan_audit(problem, plan, verdict, jobs, now)

    def cancelled(self, job: Job, by: str, reason: str, at: float) -> AuditEntry:
        return cancel_audit(job, by, reason, at)

    def decided(self, plan: Plan, first: Sequence[Job], now: float) -> None:
        """Metrics for a committed plan; `first` are the jobs it decided for the first time."""
        held = {problem_job for problem_job, text in plan.waits.items() if text.startswith(HELD_PREFIX)}
        outcomes = {
            "placed": len(plan.placements),
            "rejected": len(plan.rejections),
            "held": sum(1 for e in plan.audit if e.kind is AuditKind.HELD),
            "waiting": 0,
        }
        latencies = []
        for job in first:
            if job.id in plan.placements:
                outcome = "placed"
            elif job.id in plan.rejections:
                outcome = "rejected"
            elif job.id in held:
                outcome = "held"
            else:
                outcome = "waiting"
                outcomes["waiting"] += 1
            latencies.append((outcome, now - job.created_at))
        self.metrics.decided(outcomes, latencies, now)
        if plan.placements:
            self._recheck = True

    def tick(self, now: float) -> list[BudgetAlert]:
        """Check budgets for alerts when spend may have changed, at most every alert_check_s otherwise."""
        if not self._recheck and now - self._last_check < self.settings.alert_check_s:
            return []
        self._recheck = False
        self._last_check = now
        if self._follow_ledger:
            self.ledger.sync()  # keep up between scrapes, so the event history never runs out under load
        return self.check_alerts(now)

    def serve_metrics(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve Prometheus /metrics (returns the port) and keep the ledger current for its spend gauges."""
        bound = self.metrics.serve(port, host)
        self._follow_ledger = True
        return bound

    def check_alerts(self, now: float) -> list[BudgetAlert]:
        """Fire every threshold newly crossed this month (once: the store remembers across restarts)."""
        fired: list[BudgetAlert] = []
        for s in self.statuses(now, self._budgets_at(now)):
            for t in sorted(s.budget.thresholds):
                key = (s.budget.id, s.period.label, t)
                if s.share + 1e-12 < t or key in self._fired:
                    continue
                recorded = self.store.record_alert(
                    BudgetAlert(
                        budget_id=s.budget.id,
                        period=s.period.label,
                        threshold=t,
                        amount_usd=s.budget.amount_usd,
                        accrued_usd=s.accrued.total_usd,
                        committed_usd=s.committed_usd,
                        on_breach=s.budget.on_breach,
                        at=now,
                    )
                )
                self._fired.add(key)
                if recorded is not None:
                    self.sink.send(recorded)
                    fired.append(recorded)
        return fired

    # ================================================================== reports and the trail

    def report(
        self, by: Sequence[str], period: Period, where: Mapping[str, str] | None = None, now: float | None = None
    ) -> Showback:
        now = self.clock.now() if now is None else now
        return showback(
            self._jobs_touching(period),
            by,
            period,
            now,
            params=self.params,
            catalog=self.catalog,
            where=where,
            thresholds=FlagThresholds(
                idle_share=self.settings.idle_share, underused_share=self.settings.underused_share
            ),
        )

    def _jobs_touching(self, period: Period) -> Iterator[Job]:
        token = ""
        while True:
            jobs, token = self.store.list_jobs(JobQuery(page_size=_PAGE, page_token=token))
            for job in jobs:
                if job.attempts and job.created_at < period.end and (job.finished_at or math.inf) >= period.start:
                    yield job
            if not token:
                return

    def audit_trail(self, query: AuditQuery) -> list[AuditEntry]:
        return self.store.query_audit(query)

    # ================================================================== metrics readers

    def _site_gpus(self) -> dict[str, tuple[float, float]]:
        cap = self.store.snapshot().capacity
        out: dict[str, tuple[float, float]] = {}
        for i, p in enumerate(self.catalog.pools):
            free = int(cap.elastic_free[i]) if p.elastic else int(cap.gpu_free[i].sum())
            used = (p.max_gpus * FULL - free) / FULL
            a, _ = out.get(p.site, (0.0, 0.0))
            out[p.site] = (a + used, float(self.catalog.total_gpus(p.site)))
        return out

    def _spend_by_cost_center(self) -> dict[str, Costs]:
        self.ledger.sync()
        now = self.clock.now()
        return self.ledger.by_tag("cost_center", month_of(now), now)

    def close(self) -> None:
        self.sink.close()
        self.metrics.close()


def _describe(b: Budget) -> str:
    alerts = ", ".join(f"{t:.0%}" for t in b.thresholds)
    return f"${b.amount_usd:,.2f} per {b.period}, on breach {b.on_breach}, alerts at {alerts}"


def _changes(old: Budget, new: Budget) -> str:
    parts = []
    if old.amount_usd != new.amount_usd:
        parts.append(f"amount ${old.amount_usd:,.2f} -> ${new.amount_usd:,.2f}")
    if old.on_breach != new.on_breach:
        parts.append(f"on breach {old.on_breach} -> {new.on_breach}")
    if old.thresholds != new.thresholds:
        parts.append(
            f"alerts {', '.join(f'{t:.0%}' for t in old.thresholds)} -> {', '.join(f'{t:.0%}' for t in new.thresholds)}"
        )
    return "; ".join(parts)
