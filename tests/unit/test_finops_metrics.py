"""Metrics by outcome, from a scheduler on the virtual clock (read straight from its registry)."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from placers.domain import JobState
from scheduler.finops.model import BreachPolicy, Budget
from tests.conftest import spec


def samples(svc) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(svc.governance.metrics.registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_decisions_latency_queue_spend_and_budgets(make_service, clock):
    svc = make_service()
    need = svc.explain_spec(spec(gpus=8, runtime_s=36000, tags={"cost_center": "cc-x"})).chosen.cost.total_usd
    svc.governance.create_budget(Budget("cost_center", "cc-x", need * 1.5, BreachPolicy.HOLD), "finance")
    jobs = svc.submit(
        [
            spec(gpus=8, runtime_s=36000, tags={"cost_center": "cc-x"}),  # placed
            spec(gpus=8, runtime_s=36000, tags={"cost_center": "cc-x"}),  # held by the budget
            spec(
                gpus=8,
                single_node=True,
                allowed_sites=("onprem-fra",),
                tags={"cost_center": "cc-y"},
                gpu_models=("L40S",),
            ),
        ]
    )
    clock.advance(2.0)  # decided two seconds after submission
    svc.run_cycle()
    assert [svc.get(j.id).state for j, _ in jobs] == [JobState.PLACED, JobState.PENDING, JobState.REJECTED]
    clock.advance(3600)
    svc.run_cycle()
    svc.run_cycle()
    m = samples(svc)
    assert m[("gravity_decisions_total", (("outcome", "placed"),))] == 1
    assert m[("gravity_decisions_total", (("outcome", "held"),))] == 1  # once, not every cycle it waits
    assert m[("gravity_decisions_total", (("outcome", "rejected"),))] == 1
    assert m[("gravity_decision_latency_seconds_count", (("outcome", "held"),))] == 1
    assert m[("gravity_decision_latency_seconds_bucket", (("le", "1.0"), ("outcome", "placed")))] == 0
    assert m[("gravity_decision_latency_seconds_bucket", (("le", "2.5"), ("outcome", "placed")))] == 1
    assert m[("gravity_queue_depth", ())] == 1
    assert m[("gravity_jobs", (("state", "running"),))] == 1
    assert m[("gravity_spend_usd", (("cost_center", "cc-x"), ("kind", "compute")))] > 0
    ratio = m[("gravity_budget_spend_ratio", (("budget", "cost_center=cc-x"),))]
    assert 0.6 < ratio < 0.7  # one of the two jobs' projected cost against 1.5 jobs' budget
    assert m[("gravity_gpus_allocated", (("site", "onprem-sjc"),))] == 8
    assert m[("gravity_gpu_utilisation_ratio", (("site", "onprem-sjc"),))] == 8 / 224
