"""FinOps records kept in the store: budgets, the alerts they fired, and the decision audit trail.

Small frozen values with units in their names. A `Budget` is a small document with a
`version` for compare-and-set; alerts and audit entries are append-only logs whose `seq`
the store assigns. Nothing here knows about protobuf or Redis.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

from placers.domain import UnixSeconds

#: Alert thresholds (fractions of the budget) when a budget names none.
DEFAULT_THRESHOLDS: tuple[float, ...] = (0.5, 0.8, 1.0)

_TAG_KEY = re.compile(r"^[A-Za-z0-9_.\-/]+$")


class BreachPolicy(enum.StrEnum):
    """What happens to a job whose projected cost would take its budget past 100%."""

    REJECT = "reject"  # the job is rejected with the budget as its reason
    HOLD = "hold"  # the job waits in the queue until the next period or a budget raise
    ALERT = "alert"  # the job is placed anyway; the budget's alerts say so


class BudgetPeriod(enum.StrEnum):
    MONTH = "month"  # calendar month, UTC


class InvalidBudget(ValueError):
    """A budget that cannot be stored; `field` names the offending field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


def budget_id(tag: str, value: str) -> str:
    """A budget's id is its scope: the tag and the value it covers, e.g. 'cost_center=cc-4411'."""
    return f"{tag}={value}"


@dataclass(frozen=True, slots=True)
class Budget:
    """USD per period for the jobs whose tag `tag` has the value `value`."""

    tag: str
    value: str
    amount_usd: float
    on_breach: BreachPolicy = BreachPolicy.HOLD
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    period: BudgetPeriod = BudgetPeriod.MONTH
    version: int = 0  # set by the store: 1 on create, +1 on every update
    updated_at: UnixSeconds = 0.0
    updated_by: str = ""

    @property
    def id(self) -> str:
        return budget_id(self.tag, self.value)

    @property
    def enforced(self) -> bool:
        """Does a breach stop the job (reject or hold), rather than only alert?"""
        return self.on_breach is not BreachPolicy.ALERT

    def validate(self) -> None:
        if not self.tag or not _TAG_KEY.match(self.tag):
            raise InvalidBudget("tag", "a tag key (letters, digits, _ . - /) is required")
        if not self.value.strip():
            raise InvalidBudget("value", "the tag value the budget covers is required")
        if "=" in self.tag:
            raise InvalidBudget("tag", "may not contain '='")
        if not (math.isfinite(self.amount_usd) and self.amount_usd >= 0):
            raise InvalidBudget("amount_usd", "must be a finite number >= 0")
        if not self.thresholds:
            raise InvalidBudget("thresholds", "at least one threshold is required")
        for i, t in enumerate(self.thresholds):
            if not (math.isfinite(t) and 0 < t <= 10):
                raise InvalidBudget(f"thresholds[{i}]", f"must be a fraction of the budget in (0, 10], got {t}")
        if len(set(self.thresholds)) != len(self.thresholds):
            raise InvalidBudget("thresholds", "thresholds must be distinct")


@dataclass(frozen=True, slots=True)
class BudgetAlert:
    """A budget's spend crossed one of its thresholds in a period. Fired once per (budget, period, threshold)."""

    budget_id: str
    period: str  # e.g. 2026-11
    threshold: float  # fraction of the budget, e.g. 0.8
    amount_usd: float
    accrued_usd: float  # cost already incurred in the period
    committed_usd: float  # projected cost still to come of the jobs holding capacity
    on_breach: BreachPolicy
    at: UnixSeconds
    seq: int = 0  # set by the store

    @property
    def spend_usd(self) -> float:
        return self.accrued_usd + self.committed_usd

    @property
    def key(self) -> tuple[str, str, float]:
        return (self.budget_id, self.period, self.threshold)

    @property
    def message(self) -> str:
        share = self.spend_usd / self.amount_usd if self.amount_usd > 0 else math.inf
        what = {
            BreachPolicy.REJECT: "new jobs that would exceed it are rejected",
            BreachPolicy.HOLD: "new jobs that would exceed it are held in the queue",
            BreachPolicy.ALERT: "jobs keep running past it (allow and alert)",
        }[self.on_breach]
        return (
            f"budget {self.budget_id} at {share:.0%} of ${self.amount_usd:,.2f} for {self.period} "
            f"(threshold {self.threshold:.0%}): ${self.accrued_usd:,.2f} spent + ${self.committed_usd:,.2f} "
            f"committed; {what}"
        )


class AuditKind(enum.StrEnum):
    PLACED = "placed"
    REJECTED = "rejected"
    HELD = "held"  # held in the queue by a budget
    EXCLUDED = "excluded"  # sites ruled out by policy (residency, jurisdiction, allowed sites, latency)
    CANCELLED = "cancelled"
    BUDGET_CHANGED = "budget_changed"  # a budget created, updated or deleted


#: Who makes scheduling decisions, as recorded in the audit trail.
SCHEDULER_ACTOR = "scheduler"
_NO_TAGS: Mapping[str, str] = MappingProxyType({})


class AuditEntry(NamedTuple):
    """One decision with its reason. Written in the same store operation as the decision itself.

    A NamedTuple rather than a frozen dataclass: one is made per decision in the scheduling
    cycle, and a frozen dataclass costs several times more to build."""

    at: UnixSeconds
    kind: AuditKind
    reason: str
    job_id: str = ""  # empty for decisions about budgets
    actor: str = SCHEDULER_ACTOR
    site: str = ""  # where the job was placed (placed), or the sites excluded (excluded), comma-separated
    tags: Mapping[str, str] = _NO_TAGS  # the job's tags, so the trail is queryable by tag
    seq: int = 0  # set by the store when appended


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Audit entries in append order; all given filters must match."""

    job_id: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    kinds: frozenset[AuditKind] = frozenset()
    since: UnixSeconds | None = None  # at >= since
    until: UnixSeconds | None = None  # at < until
    after_seq: int = 0  # page token: entries with seq > after_seq
    limit: int = 100

    def matches(self, e: AuditEntry) -> bool:
        if self.job_id and e.job_id != self.job_id:
            return False
        if self.kinds and e.kind not in self.kinds:
            return False
        if self.since is not None and e.at < self.since:
            return False
        if self.until is not None and e.at >= self.until:
            return False
        return all(e.tags.get(k) == v for k, v in self.tags.items())


class VersionMismatch(RuntimeError):
    """A compare-and-set on a versioned document failed: `actual` is its current version (0 = absent)."""

    def __init__(self, what: str, expected: int, actual: int) -> None:
        if actual == 0:
            text = f"{what} does not exist"
        elif expected == 0:
            text = f"{what} already exists (version {actual})"
        else:
            text = f"{what} is at version {actual}, not {expected}: it changed since it was read"
        super().__init__(text)
        self.expected = expected
        self.actual = actual
