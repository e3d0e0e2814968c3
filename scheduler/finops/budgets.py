"""Budgets in force for one scheduling cycle, and the review of a placer's result against them.

remaining = amount - (accrued in the current month + committed projected spend of the jobs
holding capacity). The placer sees, per job, the enforced budget with least left
(`PlacementProblem.budget_key`) and skips options it cannot afford; `review` then checks every
budget a job falls under (a job may draw on its cost center's and its project's), in the
placer's job order, withdrawing placements that would breach one and deciding, per breach
policy, what happens to jobs that no budget can afford now:

    reject  the job is rejected, naming the budget
    hold    the job waits (until the next month or a budget raise)
    alert   nothing is stopped; the placement is noted as over budget and alerts fire
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from placers.domain import JobSpec
from placers.greedy import job_order
from placers.problem import PlacementProblem, Reason
from placers.result import Decision, PlacementResult
from scheduler.finops.costing import Costs
from scheduler.finops.model import BreachPolicy, Budget
from scheduler.finops.periods import Period, month_of

EPS_USD = 1e-9
HELD_PREFIX = "held for budget"


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    budget: Budget
    period: Period
    accrued: Costs
    committed_usd: float

    @property
    def spend_usd(self) -> float:
        return self.accrued.total_usd + self.committed_usd

    @property
    def remaining_usd(self) -> float:
        return self.budget.amount_usd - self.spend_usd

    @property
    def share(self) -> float:
        """Spend as a fraction of the budget (inf for a zero budget with spend)."""
        if self.budget.amount_usd > 0:
            return self.spend_usd / self.budget.amount_usd
        return math.inf if self.spend_usd > EPS_USD else 0.0


@dataclass(frozen=True, slots=True)
class Hold:
    key: str  # the budgets holding the job, e.g. "cost_center=cc-1"
    reason: str


@dataclass(frozen=True)
class Verdict:
    """The placer's result after budgets: what stays placed, and what budgets did to the rest (by job row)."""

    result: PlacementResult
    rejections: Mapping[int, str] = field(default_factory=dict)
    holds: Mapping[int, Hold] = field(default_factory=dict)
    over_budget: Mapping[int, tuple[str, ...]] = field(default_factory=dict)  # placed past alert-only budgets


class BudgetState:
    """The budgets and what is left of each, as of one instant."""

    def __init__(self, statuses: Sequence[BudgetStatus], now: float) -> None:
        self.now = now
        self.period = month_of(now)
        self.statuses = {s.budget.id: s for s in statuses}
        self._by_tag: dict[str, dict[str, str]] = {}
        for s in statuses:
            self._by_tag.setdefault(s.budget.tag, {})[s.budget.value] = s.budget.id

    @classmethod
    def empty(cls, now: float) -> BudgetState:
        return cls((), now)

    def __bool__(self) -> bool:
        return bool(self.statuses)

    def applicable(self, tags: Mapping[str, str]) -> list[str]:
        """Ids of the budgets a job with these tags draws on."""
        out = []
        for tag, values in self._by_tag.items():
            v = tags.get(tag)
            if v is not None and v in values:
                out.append(values[v])
        return out

    def remaining_usd(self) -> dict[str, float]:
        """What the enforced budgets have left (what the placer may spend)."""
        return {i: s.remaining_usd for i, s in self.statuses.items() if s.budget.enforced}

    def keys(self, specs: Sequence[JobSpec]) -> list[str | None]:
        """Per job: the enforced budget with the least left, the one the placer checks."""
        left = self.remaining_usd()
        out: list[str | None] = []
        for spec in specs:
            ids = [i for i in self.applicable(spec.tags) if i in left]
            out.append(min(ids, key=lambda i: (left[i], i)) if ids else None)
        return out

    # ------------------------------------------------------------------ review

    def review(self, problem: PlacementProblem, result: PlacementResult) -> Verdict:
        if not self.statuses:
            return Verdict(result)
        remaining = {i: s.remaining_usd for i, s in self.statuses.items()}
        scopes = [self.applicable(s.tags) for s in problem.specs]
        if not any(scopes):
            return Verdict(result)
        decisions = {d.job: d for d in result.decisions}
        total = problem.total_usd
        ok = problem.static_ok()
        never = problem.never_fits()
        rejections: dict[int, str] = {}
        holds: dict[int, Hold] = {}
        over: dict[int, tuple[str, ...]] = {}
        for row in job_order(problem):
            j = int(row)
            ids = scopes[j]
            d = decisions.get(j)
            if not ids or d is None:
                continue
            withdrawn_usd = None
            if d.placed:
                cost = d.cost.total_usd if d.cost else float(total[j, d.option])
                breached = [i for i in ids if self._enforced(i) and cost > remaining[i] + EPS_USD]
                if not breached:
                    for i in ids:
                        remaining[i] -= cost
                    past = tuple(i for i in ids if remaining[i] < -EPS_USD)
                    if past:
                        over[j] = past
                    continue
                withdrawn_usd = cost
                decisions[j] = Decision(job=j, reason=int(Reason.BUDGET), note="")
            if never[j]:
                continue
            eligible = total[j][ok[j]]
            need = float(eligible.min()) if len(eligible) else float(np.inf)
            breached = [i for i in ids if self._enforced(i) and need > remaining[i] + EPS_USD]
            if breached:
                rejecting = [i for i in breached if self.statuses[i].budget.on_breach is BreachPolicy.REJECT]
                if rejecting:
                    rejections[j] = self._reject_text(rejecting, remaining, need)
                else:
                    holds[j] = self._hold(breached, remaining, need)
            elif withdrawn_usd is not None:
                breached = [i for i in ids if self._enforced(i) and withdrawn_usd > remaining[i] + EPS_USD]
                holds[j] = self._hold(breached, remaining, withdrawn_usd)
        if not (rejections or holds or over):
            return Verdict(result)
        out = replace(result, decisions=[decisions[d.job] for d in result.decisions])
        return Verdict(out, rejections, holds, over)

    def _enforced(self, budget_id: str) -> bool:
        return self.statuses[budget_id].budget.enforced

    def _detail(self, ids: Sequence[str], remaining: Mapping[str, float], need: float) -> str:
        parts = []
        for i in ids:
            s = self.statuses[i]
            parts.append(
                f"{i} has ${max(remaining[i], 0.0):,.2f} of ${s.budget.amount_usd:,.2f} left for {self.period.label}"
            )
        return f"{'; '.join(parts)}; the job's cheapest eligible placement needs ${need:,.2f}"

    def _reject_text(self, ids: Sequence[str], remaining: Mapping[str, float], need: float) -> str:
        return f"rejected by budget {', '.join(ids)} (reject on breach): {self._detail(ids, remaining, need)}"

    def _hold(self, ids: Sequence[str], remaining: Mapping[str, float], need: float) -> Hold:
        key = ", ".join(ids)
        nxt = month_of(self.period.end).label
        text = (
            f"{HELD_PREFIX} {key}: {self._detail(ids, remaining, need)}; "
            f"waiting for the next period ({nxt}) or a budget raise"
        )
        return Hold(key, text)
