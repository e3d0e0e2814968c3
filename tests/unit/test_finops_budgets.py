"""Budgets at admission: reject, hold or allow-and-alert on breach; alerts fire once per threshold."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from placers.catalog import Catalog
from placers.domain import JobSpec, JobState
from placers.registry import make_placer
from scheduler.clock import ManualClock
from scheduler.executors.sim import SimExecutor
from scheduler.finops.alerts import AlertSink
from scheduler.finops.governance import Governance
from scheduler.finops.model import AuditKind, AuditQuery, BreachPolicy, Budget
from scheduler.finops.periods import parse_period
from scheduler.service import SchedulerService
from scheduler.settings import CycleSettings, FinOpsSettings
from scheduler.store.base import Store
from scheduler.store.memory import MemoryStore
from scheduler.store.redis import RedisStore
from tests.conftest import spec
from tests.redis_support import REDIS_URL, fresh_redis

NOV_10 = datetime(2026, 11, 10, 9, tzinfo=UTC).timestamp()


class Webhook:
    """A real HTTP endpoint on localhost that records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, object]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                assert self.headers["Content-Type"] == "application/json"
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/gravity"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    w = Webhook()
    yield w
    w.close()


class World:
    """A scheduler over a store that outlives it, so a test can restart the scheduler.

    With `redis`, the store is a RedisStore on the flushed test database, and a restart opens a
    new connection to it: nothing survives in the process but the executor."""

    def __init__(self, catalog: Catalog, webhook_url: str = "", *, redis: bool = False) -> None:
        self.catalog = catalog
        self.clock = ManualClock(NOV_10)
        self.redis = redis
        if redis:
            fresh_redis().close()
        self.store: Store = self.open_store()
        self.executor = SimExecutor(self.clock, catalog)
        self.webhook_url = webhook_url
        self.svc = self.start()

    def open_store(self) -> Store:
        return RedisStore(self.catalog, REDIS_URL) if self.redis else MemoryStore(self.catalog)

    def start(self) -> SchedulerService:
        settings = FinOpsSettings(alert_webhook_url=self.webhook_url)
        sink = AlertSink(self.webhook_url, timeout_s=2.0, retries=0) if self.webhook_url else None
        gov = Governance(self.store, self.catalog, self.clock, settings, sink=sink)
        self.svc = SchedulerService(
            self.catalog, self.store, self.executor, make_placer("greedy"), self.clock, CycleSettings(), governance=gov
        )
        return self.svc

    def restart(self) -> SchedulerService:
        self.svc.governance.close()
        if self.redis:
            self.store.close()
            self.store = self.open_store()
        return self.start()

    def budget(self, amount: float, policy: BreachPolicy, value: str = "cc-x", tag: str = "cost_center") -> Budget:
        return self.svc.governance.create_budget(Budget(tag, value, amount, policy), actor="finance")

    def cost(self, s: JobSpec) -> float:
        ex = self.svc.explain_spec(s)
        assert ex.chosen is not None
        return ex.chosen.cost.total_usd

    def submit(self, s: JobSpec) -> str:
        ((job, _),) = self.svc.submit([s])
        return job.id


def train(cc: str = "cc-x", **kw: object) -> JobSpec:
    base: dict[str, object] = {"gpus": 8, "runtime_s": 36000.0, "tags": {"cost_center": cc}}
    base.update(kw)
    return spec(**base)


def test_reject_policy_refuses_the_next_job_with_a_clear_reason(catalog):
    w = World(catalog)
    need = w.cost(train())
    w.budget(need, BreachPolicy.REJECT)  # the first job takes the budget to exactly 100%
    first = w.submit(train())
    w.svc.run_cycle()
    assert w.svc.get(first).state is JobState.PLACED
    second = w.submit(train())
    w.svc.run_cycle()
    job = w.svc.get(second)
    assert job.state is JobState.REJECTED
    assert job.reason.startswith("rejected by budget cost_center=cc-x (reject on breach): ")
    assert f"has $0.00 of ${need:,.2f} left for 2026-11" in job.reason
    assert f"needs ${need:,.2f}" in job.reason
    other = w.submit(train(cc="cc-other"))  # other cost centers are unaffected
    w.svc.run_cycle()
    assert w.svc.get(other).state is JobState.PLACED
    (entry,) = w.store.query_audit(AuditQuery(job_id=second))
    assert entry.kind is AuditKind.REJECTED and entry.reason == job.reason
    assert [a.threshold for a in w.store.alerts(0)] == [0.5, 0.8, 1.0]


def test_hold_policy_keeps_the_job_queued_until_a_raise(catalog):
    w = World(catalog)
    need = w.cost(train())
    w.budget(need * 1.5, BreachPolicy.HOLD)
    first, second = w.submit(train()), w.submit(train())
    for _ in range(5):
        w.svc.run_cycle()
        w.clock.advance(60)
    assert w.svc.get(first).state in (JobState.PLACED, JobState.RUNNING)
    held = w.svc.get(second)
    assert held.state is JobState.PENDING
    assert held.reason.startswith("held for budget cost_center=cc-x: ")
    assert "waiting for the next period (2026-12) or a budget raise" in held.reason
    holds = w.store.query_audit(AuditQuery(job_id=second, kinds=frozenset({AuditKind.HELD})))
    assert len(holds) == 1, "recorded once when the hold began, not every cycle"
    current = w.store.get_budget("cost_center=cc-x")
    w.svc.governance.update_budget(Budget("cost_center", "cc-x", need * 3, BreachPolicy.HOLD), current.version, "cfo")
    w.svc.retry_waiting()
    w.svc.run_cycle()
    assert w.svc.get(second).state is JobState.PLACED
    changes = w.store.query_audit(AuditQuery(kinds=frozenset({AuditKind.BUDGET_CHANGED})))
    assert changes[-1].actor == "cfo" and "amount" in changes[-1].reason


def test_hold_policy_releases_the_job_in_the_next_period(catalog):
    w = World(catalog)
    need = w.cost(train())
    w.budget(need * 1.5, BreachPolicy.HOLD)
    first, second = w.submit(train()), w.submit(train())
    w.svc.run_cycle()
    assert w.svc.get(second).state is JobState.PENDING
    w.clock.set(parse_period("2026-11").end - 3600)  # late November: the first job is long done
    w.svc.run_cycle()
    assert w.svc.get(first).state is JobState.SUCCEEDED
    assert w.svc.get(second).state is JobState.PENDING, "November's spend still counts until November ends"
    w.clock.set(parse_period("2026-12").start + 60)
    w.svc.run_cycle()
    assert w.svc.get(second).state is JobState.PLACED


def test_allow_policy_places_and_alerts(catalog):
    w = World(catalog)
    need = w.cost(train())
    w.budget(need * 1.5, BreachPolicy.ALERT)
    jobs = [w.submit(train()) for _ in range(2)]
    w.svc.run_cycle()
    assert [w.svc.get(j).state for j in jobs] == [JobState.PLACED, JobState.PLACED]
    placed = w.store.query_audit(AuditQuery(job_id=jobs[1], kinds=frozenset({AuditKind.PLACED})))
    assert "over budget cost_center=cc-x (allow and alert)" in placed[0].reason
    assert [a.threshold for a in w.store.alerts(0)] == [0.5, 0.8, 1.0]


def test_every_budget_a_job_draws_on_is_enforced_within_one_batch(catalog):
    w = World(catalog)
    need = w.cost(train())
    w.budget(need * 100, BreachPolicy.HOLD, "cc-a")
    w.budget(need * 1.05, BreachPolicy.HOLD, "cc-b")
    w.budget(need * 1.2, BreachPolicy.HOLD, "shared", tag="project")
    # Each job's tightest budget differs, the project budget is common: only one of them fits it.
    a = w.submit(train(cc="cc-a", tags={"cost_center": "cc-a", "project": "shared"}))
    b = w.submit(train(cc="cc-b", tags={"cost_center": "cc-b", "project": "shared"}))
    w.svc.run_cycle()
    assert w.svc.get(a).state is JobState.PLACED
    job_b = w.svc.get(b)
    assert job_b.state is JobState.PENDING and job_b.reason.startswith("held for budget project=shared: ")


def test_project_budget_with_reject_refuses_even_when_the_cost_center_has_room(catalog):
    w = World(catalog)
    w.budget(10_000.0, BreachPolicy.HOLD)
    w.budget(1.0, BreachPolicy.REJECT, "tiny", tag="project")
    j = w.submit(train(tags={"cost_center": "cc-x", "project": "tiny"}))
    w.svc.run_cycle()
    job = w.svc.get(j)
    assert job.state is JobState.REJECTED and "rejected by budget project=tiny" in job.reason


@pytest.mark.parametrize("durable", [False, pytest.param(True, marks=pytest.mark.redis)], ids=["memory", "redis"])
def test_alerts_fire_once_per_threshold_also_across_a_restart(catalog, webhook, durable):
    w = World(catalog, webhook.url, redis=durable)
    need = w.cost(train())
    w.budget(need * 3.2, BreachPolicy.ALERT)  # thresholds 50/80/100%
    fired: list[list[float]] = []
    for _ in range(4):  # 31%, 62%, 94%, 125% of the budget
        w.submit(train())
        for _ in range(3):
            w.svc.run_cycle()
            w.clock.advance(5)
        fired.append([a.threshold for a in w.store.alerts(0)])
    assert fired == [[], [0.5], [0.5, 0.8], [0.5, 0.8, 1.0]]
    assert w.svc.governance.sink.flush(5.0)
    assert [b["threshold"] for b in webhook.bodies] == [0.5, 0.8, 1.0]
    body = webhook.bodies[-1]
    assert body["budget"] == "cost_center=cc-x" and body["period"] == "2026-11" and body["on_breach"] == "alert"
    assert body["spend_usd"] >= body["amount_usd"] and "at 1" in body["message"]

    svc = w.restart()  # a new scheduler on the same store: nothing fires again
    for _ in range(3):
        svc.run_cycle()
        w.clock.advance(5)
    assert len(w.store.alerts(0)) == 3
    assert svc.governance.sink.flush(5.0) and len(webhook.bodies) == 3

    w.clock.set(parse_period("2026-12").start + 10)  # a new period: thresholds fire again as spend grows
    for _ in range(2):
        w.submit(train())
    svc.run_cycle()
    assert [(a.period, a.threshold) for a in w.store.alerts(3)] == [("2026-12", 0.5)]
    assert svc.governance.sink.flush(5.0) and len(webhook.bodies) == 4


def test_webhook_failures_do_not_stall_and_are_counted(catalog, caplog):
    sink = AlertSink("http://127.0.0.1:9/nothing-listens", timeout_s=0.5, retries=1, backoff_s=0.01)
    w = World(catalog)
    w.svc.governance.sink = sink
    w.budget(1.0, BreachPolicy.ALERT)
    w.submit(train())
    w.svc.run_cycle()
    assert sink.flush(10.0)
    assert sink.failed == 3 and sink.delivered == 0  # one per threshold, each retried once
    assert "not delivered" in caplog.text
    sink.close()


def test_bad_webhook_url_is_a_config_error(catalog):
    with pytest.raises(ValueError, match="alert_webhook_url"):
        AlertSink("ftp://example.invalid/x")
