"""Contract tests every registered placer passes (placers.registry.PLACERS: new ones are picked up).

Never over any capacity or quota (every placement replayed into a fresh copy of the capacity);
never against a permanent rule (residency, jurisdiction, deadline, latency, cost cap, ...), an
unavailable site or a budget; a reason on every unplaced job; the same plan for the same input;
and no higher-tier job left unplaced while a lower-tier job holds capacity it could use.
"""

from __future__ import annotations

import numpy as np
import pytest

from placers.capacity import CapacityState, Demand
from placers.domain import CostBreakdown, Dataset
from placers.problem import ProblemSettings, Reason, build_problem
from placers.registry import PLACERS, make_placer
from placers.result import Decision, PlacementResult
from placers.sharing import plan_cost
from placers.waiting import WaitPolicy, WaitRule
from tests.conftest import spec
from tests.contract.placement_cases import NOW, check_priority, check_rules, random_problem, replay

NAMES = sorted(PLACERS)
SEEDS = range(12)


def build(catalog, specs, capacity=None, **kw):
    from scheduler.admission import resolve_datasets

    kw.setdefault("settings", ProblemSettings(waiting=WaitRule(policy=WaitPolicy.NO_WAIT)))
    return build_problem(
        catalog,
        specs,
        [f"j{i}" for i in range(len(specs))],
        [resolve_datasets(s, catalog) for s in specs],
        capacity or CapacityState.empty(catalog),
        NOW,
        **kw,
    )


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", SEEDS)
def test_random_instances_keep_every_rule(catalog, name, seed):
    problem = random_problem(catalog, seed)
    result = make_placer(name).place(problem)
    final = replay(problem, list(result.decisions))
    check_rules(problem, result)
    check_priority(problem, result, final)
    assert any(d.placed for d in result.decisions), "a random instance always has something that fits"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", SEEDS)
def test_random_instances_with_waiting_keep_every_rule(catalog, name, seed):
    problem = random_problem(catalog, seed, waiting=True)
    result = make_placer(name).place(problem)
    final = replay(problem, list(result.decisions))
    check_rules(problem, result)
    check_priority(problem, result, final)


def test_waiting_instances_do_defer(catalog):
    """The waiting variant must exercise deferral for every placer."""
    for name in NAMES:
        deferred = sum(
            1
            for seed in SEEDS
            for d in make_placer(name).place(random_problem(catalog, seed, waiting=True)).decisions
            if d.reason & int(Reason.DEFERRED)
        )
        assert deferred > 0, name


@pytest.mark.parametrize("name", NAMES)
def test_same_input_same_plan(catalog, name):
    problem = random_problem(catalog, 99, n_jobs=60)
    a = make_placer(name).place(problem)
    b = make_placer(name).place(random_problem(catalog, 99, n_jobs=60))
    assert [(d.option, d.bindings, d.reason, d.cost) for d in a.decisions] == [
        (d.option, d.bindings, d.reason, d.cost) for d in b.decisions
    ]
    assert a.new_replicas == b.new_replicas


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch(catalog, name):
    result = make_placer(name).place(build(catalog, []))
    assert list(result.decisions) == []


@pytest.mark.parametrize("name", NAMES)
def test_a_job_no_site_can_ever_take_is_unplaced_with_its_permanent_reasons(catalog, name):
    p = build(catalog, [spec(datasets=("eu-customer-support-2026",), allowed_jurisdictions=("US",))])
    d = make_placer(name).place(p).decisions[0]
    assert not d.placed and d.reason & int(Reason.RESIDENCY | Reason.JURISDICTION)


@pytest.mark.parametrize("name", NAMES)
def test_gang_never_split_even_when_total_free_would_do(catalog, name):
    cap = CapacityState.empty(catalog)
    pool = catalog.pool_index["onprem-fra/a100"]  # 8 nodes x 8
    for _ in range(8):
        cap.place(pool, Demand(gpus=5, single_node=True))  # 3 free on every node: 24 in all
    p = build(catalog, [spec(gpus=8, single_node=True, allowed_sites=("onprem-fra",))], capacity=cap)
    result = make_placer(name).place(p)
    d = result.decisions[0]
    assert not d.placed and d.reason & int(Reason.CAPACITY)
    replay(p, list(result.decisions))


@pytest.mark.parametrize("name", NAMES)
def test_higher_tier_gets_the_only_place_it_fits(catalog, name):
    # onprem-fra's A100 pool fits either the tier-2 gang (8 whole nodes) or the tier-0 small jobs
    cap = CapacityState.empty(catalog)
    pool = catalog.pool_index["onprem-fra/a100"]
    for _ in range(7):
        cap.place(pool, Demand(gpus=8, single_node=True))
    small = [spec(gpus=2, single_node=True, allowed_sites=("onprem-fra",), priority=0) for _ in range(4)]
    big = spec(gpus=8, single_node=True, allowed_sites=("onprem-fra",), priority=2)
    p = build(catalog, [*small, big], capacity=cap)
    result = make_placer(name).place(p)
    decisions = list(result.decisions)
    assert decisions[-1].placed
    assert not any(d.placed for d in decisions[:-1])
    assert all(d.reason & int(Reason.CAPACITY) for d in decisions[:-1])
    check_priority(p, result, replay(p, decisions))


@pytest.mark.parametrize("name", NAMES)
def test_budget_lets_only_what_it_covers(catalog, name):
    jobs = [spec(gpus=8, single_node=True, runtime_s=3600, tags={"cost_center": "cc"}) for _ in range(3)]
    # the cheapest hour of 8 GPUs is on-prem H100s: 8 x 1.45 / 2.2 = $5.27; $8 covers one job, not two
    p = build(catalog, jobs, budget_remaining_usd={"cc": 8.0})
    result = make_placer(name).place(p)
    check_rules(p, result)
    placed = [d for d in result.decisions if d.placed]
    assert len(placed) == 1
    assert all(d.reason & int(Reason.BUDGET) for d in result.decisions if not d.placed)


@pytest.mark.parametrize("name", NAMES)
def test_readers_of_one_dataset_share_one_copy(catalog, name):
    ds = Dataset("shared-corpus", 5_000.0, ("aws-us-east-1",), "internal")
    jobs = [spec(gpus=1, datasets=(ds,), allowed_sites=("gcp-us-central1",), runtime_s=1800) for _ in range(4)]
    p = build(catalog, jobs)
    result = make_placer(name).place(p)
    assert all(d.placed for d in result.decisions)
    assert result.new_replicas == {"shared-corpus": ("gcp-us-central1",)}
    copy_usd = 5_000.0 * float(
        catalog.egress_usd_per_gb[catalog.site_index["aws-us-east-1"], catalog.site_index["gcp-us-central1"]]
    )
    shares = [d.cost.egress_usd for d in result.decisions]
    assert sum(shares) == pytest.approx(copy_usd) and max(shares) == pytest.approx(min(shares))
    for d in result.decisions:
        assert [(m.dataset_id, m.to_site) for m in d.data_moves] == [("shared-corpus", "gcp-us-central1")]
        assert d.data_moves[0].egress_usd == pytest.approx(copy_usd / 4)
    assert plan_cost(p, list(result.decisions)).total_usd == pytest.approx(result.objective_usd(p))


@pytest.mark.parametrize("name", NAMES)
def test_shared_gpu_and_replicas_bind_exactly(catalog, name):
    from placers.domain import InferenceSpec, JobKind

    jobs = [
        spec(gpus=1, gpu_milli=500, allowed_sites=("onprem-sjc",)),
        spec(gpus=1, gpu_milli=250, allowed_sites=("onprem-sjc",)),
        spec(
            kind=JobKind.INFERENCE,
            gpus=2,
            runtime_s=0,
            allowed_sites=("onprem-fra",),
            inference=InferenceSpec(replicas=3, dedicated=True, spread=True),
        ),
    ]
    p = build(catalog, jobs)
    result = make_placer(name).place(p)
    assert all(d.placed for d in result.decisions)
    replay(p, list(result.decisions))
    nodes = {b.node for b in result.decisions[2].bindings}
    assert len(nodes) == 3  # spread replicas on distinct nodes


@pytest.mark.parametrize("name", NAMES)
def test_unavailable_site_is_never_used(catalog, name):
    jobs = [spec(gpus=1) for _ in range(5)]
    p = build(catalog, jobs, unavailable_sites=frozenset({"onprem-sjc"}))
    result = make_placer(name).place(p)
    for d in result.decisions:
        assert d.placed and p.catalog.pools[int(p.options.pool[d.option])].site != "onprem-sjc"


def test_every_registered_name_builds_a_placer_with_that_name():
    for name in NAMES:
        assert make_placer(name).name == name
    with pytest.raises(ValueError, match="unknown placer 'nope'"):
        make_placer("nope")


def test_random_instances_are_really_tight(catalog):
    """The generator must exercise capacity: some jobs wait for it in most instances."""
    waiting = 0
    for seed in SEEDS:
        result = make_placer("greedy").place(random_problem(catalog, seed))
        waiting += sum(1 for d in result.decisions if not d.placed and d.reason & int(Reason.CAPACITY))
    assert waiting >= len(SEEDS)
    assert np.isfinite(waiting)


# ---------------------------------------------------------------------- the checks themselves can fail


def test_replay_catches_a_double_booked_slot(catalog):
    p = build(catalog, [spec(gpus=8, single_node=True, allowed_sites=("onprem-fra",)) for _ in range(2)])
    first, second = make_placer("greedy").place(p).decisions
    forged = [first, Decision(job=second.job, option=second.option, bindings=first.bindings, reason=0)]
    with pytest.raises(AssertionError, match="not free"):
        replay(p, forged)


def test_rule_check_catches_a_residency_breach(catalog):
    p = build(catalog, [spec(datasets=("eu-customer-support-2026",))])
    us = int(np.flatnonzero(p.reasons[0] & int(Reason.RESIDENCY))[0])
    forged = PlacementResult("forged", [Decision(job=0, option=us, cost=CostBreakdown())])
    with pytest.raises(AssertionError, match="RESIDENCY"):
        check_rules(p, forged)


def test_priority_check_catches_an_inversion(catalog):
    cap = CapacityState.empty(catalog)
    pool = catalog.pool_index["onprem-fra/a100"]
    for _ in range(7):
        cap.place(pool, Demand(gpus=8, single_node=True))
    jobs = [spec(gpus=8, single_node=True, allowed_sites=("onprem-fra",), priority=p) for p in (0, 2)]
    p = build(catalog, jobs, capacity=cap)
    o = int(np.flatnonzero(p.static_ok()[0])[0])
    bindings = p.capacity.find(int(p.options.pool[o]), p.demands[0])
    forged = PlacementResult(
        "forged", [Decision(job=0, option=o, bindings=bindings), Decision(job=1, reason=int(Reason.CAPACITY))]
    )
    with pytest.raises(AssertionError, match="unplaced while job 0"):
        check_priority(p, forged, replay(p, list(forged.decisions)))
