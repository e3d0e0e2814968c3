"""Store contract, FinOps part: budgets (compare-and-set), alerts (once each), audit (atomic with decisions).

MemoryStore and RedisStore pass the same tests (the Redis one on a flushed test database, see
tests/redis_support.py); Redis cases are marked `redis` and fail, never skip, without Redis.
"""

from __future__ import annotations

import threading
import time

import pytest

from placers.domain import CostBreakdown, Job, JobState, Placement
from scheduler.finops.model import (
    AuditEntry,
    AuditKind,
    AuditQuery,
    BreachPolicy,
    Budget,
    BudgetAlert,
    VersionMismatch,
)
from scheduler.store.base import JobUpdate, Plan, Store
from tests.conftest import spec

T0 = 1_800_000_000.0


def budget(value: str = "cc-1", amount: float = 100.0, **kw: object) -> Budget:
    return Budget("cost_center", value, amount, **kw)  # type: ignore[arg-type]


def entry(job_id: str = "", kind: AuditKind = AuditKind.PLACED, at: float = T0, **kw: object) -> AuditEntry:
    return AuditEntry(at, kind, f"{kind} {job_id}", job_id, **kw)  # type: ignore[arg-type]


def pending(job_id: str, tags: dict[str, str] | None = None) -> Job:
    return Job(job_id, spec(tags=tags or {}), JobState.PENDING, T0, T0, reason="queued")


def placement() -> Placement:
    return Placement("aws-us-east-1", "p5", "H100-80GB", False, T0, T0 + 3600, CostBreakdown(10.0), 0.0)


# ---------------------------------------------------------------------- budgets


def test_budget_create_update_delete_with_versions(store: Store) -> None:
    created = store.put_budget(budget(), 0)
    assert created.version == 1 and store.get_budget("cost_center=cc-1") == created
    with pytest.raises(VersionMismatch) as err:
        store.put_budget(budget(amount=5.0), 0)  # create, but it exists
    assert err.value.actual == 1 and err.value.expected == 0
    updated = store.put_budget(budget(amount=200.0, on_breach=BreachPolicy.REJECT), 1)
    assert updated.version == 2 and updated.amount_usd == 200.0 and updated.on_breach is BreachPolicy.REJECT
    with pytest.raises(VersionMismatch) as err:
        store.put_budget(budget(amount=300.0), 1)  # stale
    assert err.value.actual == 2
    assert store.get_budget("cost_center=cc-1").amount_usd == 200.0
    with pytest.raises(VersionMismatch):
        store.delete_budget("cost_center=cc-1", expected_version=1)
    removed = store.delete_budget("cost_center=cc-1", expected_version=2)
    assert removed.amount_usd == 200.0 and store.get_budget("cost_center=cc-1") is None
    with pytest.raises(VersionMismatch) as err:
        store.delete_budget("cost_center=cc-1")
    assert err.value.actual == 0
    with pytest.raises(VersionMismatch) as err:
        store.put_budget(budget(), 3)  # update of a budget that does not exist
    assert err.value.actual == 0


def test_list_budgets_by_id(store: Store) -> None:
    store.put_budget(budget("cc-b"), 0)
    store.put_budget(Budget("project", "llm", 5.0), 0)
    store.put_budget(budget("cc-a"), 0)
    assert [b.id for b in store.list_budgets()] == ["cost_center=cc-a", "cost_center=cc-b", "project=llm"]


def test_budget_write_and_its_audit_entry_go_together(store: Store) -> None:
    store.put_budget(budget(), 0, audit=entry(kind=AuditKind.BUDGET_CHANGED, actor="ana"))
    with pytest.raises(VersionMismatch):
        store.put_budget(budget(), 0, audit=entry(kind=AuditKind.BUDGET_CHANGED, actor="bob"))
    store.delete_budget("cost_center=cc-1", audit=entry(kind=AuditKind.BUDGET_CHANGED, actor="cy"))
    with pytest.raises(VersionMismatch):
        store.delete_budget("cost_center=cc-1", audit=entry(kind=AuditKind.BUDGET_CHANGED, actor="dan"))
    assert [e.actor for e in store.query_audit(AuditQuery())] == ["ana", "cy"]


def test_concurrent_creates_one_wins(store: Store) -> None:
    wins: list[int] = []
    errors: list[int] = []

    def create(i: int) -> None:
        try:
            store.put_budget(budget(amount=float(i)), 0)
            wins.append(i)
        except VersionMismatch:
            errors.append(i)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(errors) == 7
    assert store.get_budget("cost_center=cc-1").amount_usd == float(wins[0])


# ---------------------------------------------------------------------- alerts


def alert(threshold: float, period: str = "2027-01", budget_id: str = "cost_center=cc-1") -> BudgetAlert:
    return BudgetAlert(budget_id, period, threshold, 100.0, threshold * 100, 0.0, BreachPolicy.HOLD, T0)


def test_alert_recorded_once_per_budget_period_threshold(store: Store) -> None:
    first = store.record_alert(alert(0.5))
    assert first is not None and first.seq == 1
    assert store.record_alert(alert(0.5)) is None
    assert store.record_alert(alert(0.8)).seq == 2
    assert store.record_alert(alert(0.5, period="2027-02")).seq == 3
    assert store.record_alert(alert(0.5, budget_id="project=x")).seq == 4
    assert [a.seq for a in store.alerts(0)] == [1, 2, 3, 4]
    assert [a.threshold for a in store.alerts(0, budget_id="cost_center=cc-1", period="2027-01")] == [0.5, 0.8]
    assert [a.seq for a in store.alerts(2)] == [3, 4]
    assert store.last_alert_seq() == 4


def test_alerts_wait_for_the_next_one(store: Store) -> None:
    assert store.alerts(0, timeout_s=0.05) == []
    threading.Timer(0.1, lambda: store.record_alert(alert(1.0))).start()
    began = time.monotonic()
    got = store.alerts(0, timeout_s=5.0)
    assert [a.threshold for a in got] == [1.0] and time.monotonic() - began < 4.0


# ---------------------------------------------------------------------- audit


def test_plan_audit_is_appended_only_when_the_plan_applies(store: Store) -> None:
    store.submit([pending("j-1", {"cost_center": "cc-1"}), pending("j-2")])
    v = store.snapshot().version
    ok = Plan(
        v,
        placements={"j-1": placement()},
        rejections={"j-2": "no site"},
        audit=(entry("j-1", tags={"cost_center": "cc-1"}), entry("j-2", AuditKind.REJECTED)),
    )
    assert store.commit(ok)
    stale = Plan(v, waits={"j-1": "x"}, audit=(entry("j-1", AuditKind.HELD),))
    assert not store.commit(stale)
    got = store.query_audit(AuditQuery())
    assert [(e.seq, e.job_id, e.kind) for e in got] == [(1, "j-1", AuditKind.PLACED), (2, "j-2", AuditKind.REJECTED)]


def test_update_audit_is_appended_only_when_the_update_applies(store: Store) -> None:
    store.submit([pending("j-1")])
    cancel = JobUpdate(
        "j-1", JobState.CANCELLED, T0 + 1, cancelled_by="ana", audit=(entry("j-1", AuditKind.CANCELLED, actor="ana"),)
    )
    assert store.update(cancel) is not None
    again = JobUpdate(
        "j-1", JobState.CANCELLED, T0 + 2, cancelled_by="bob", audit=(entry("j-1", AuditKind.CANCELLED, actor="bob"),)
    )
    assert store.update(again) is None  # already terminal: no second record
    assert [e.actor for e in store.query_audit(AuditQuery(job_id="j-1"))] == ["ana"]


def test_audit_query_filters_and_pages(store: Store) -> None:
    store.submit([pending(f"j-{i}") for i in range(6)])
    entries = []
    for i in range(6):
        tags = {"cost_center": "cc-a" if i % 2 else "cc-b", "project": "p"}
        kind = AuditKind.PLACED if i < 4 else AuditKind.REJECTED
        entries.append(entry(f"j-{i}", kind, at=T0 + i * 10, tags=tags))
    assert store.commit(Plan(store.snapshot().version, waits={}, audit=tuple(entries)))
    q = store.query_audit
    assert [e.job_id for e in q(AuditQuery(job_id="j-3"))] == ["j-3"]
    assert [e.job_id for e in q(AuditQuery(tags={"cost_center": "cc-a"}))] == ["j-1", "j-3", "j-5"]
    assert [e.job_id for e in q(AuditQuery(tags={"cost_center": "cc-a", "project": "q"}))] == []
    assert [e.job_id for e in q(AuditQuery(kinds=frozenset({AuditKind.REJECTED})))] == ["j-4", "j-5"]
    assert [e.job_id for e in q(AuditQuery(since=T0 + 20, until=T0 + 40))] == ["j-2", "j-3"]
    page1 = q(AuditQuery(limit=4))
    page2 = q(AuditQuery(limit=4, after_seq=page1[-1].seq))
    assert [e.job_id for e in page1 + page2] == [f"j-{i}" for i in range(6)] and len(page2) == 2
    assert [e.seq for e in q(AuditQuery(job_id="j-5", after_seq=6))] == []
