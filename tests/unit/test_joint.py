"""The joint placer's pieces, each group of constraints on its own, scored against proven optima.

Optima come from an exact MILP (OR-Tools SCIP) of the same relaxation the bound uses (GPU counts per
pool and site quota, one copy per dataset and site); plans are compared by objective, never by
assignment, as the CP-SAT primer advises.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
from ortools.linear_solver import pywraplp

from placers.bounds import lower_bound
from placers.capacity import FULL, CapacityState, Demand
from placers.domain import Dataset
from placers.joint import JointPlacer, JointSettings, _State
from placers.problem import PlacementProblem, ProblemSettings, Reason, build_problem
from placers.sharing import attribute, plan_cost, transfers
from placers.waiting import WaitPolicy, WaitRule
from tests.conftest import spec
from tests.contract.placement_cases import check_priority, check_rules, replay

NOW = 1_800_000_000.0
NO_WAIT = ProblemSettings(waiting=WaitRule(policy=WaitPolicy.NO_WAIT))


def instance(catalog, seed: int, n: int = 40, data: bool = True, onprem_busy: float = 0.8) -> PlacementProblem:
    rng = np.random.default_rng(seed)
    cap = CapacityState.empty(catalog)
    for i, pool in enumerate(catalog.pools):
        if not pool.elastic:
            for _ in range(int(pool.nodes * onprem_busy)):
                cap.place(i, Demand(gpus=pool.gpus_per_node, single_node=True))
    sets = [
        Dataset(
            f"d{k}",
            float(rng.choice([50, 800, 4000, 20000])),
            (str(rng.choice(["onprem-sjc", "aws-us-east-1", "gcp-us-central1"])),),
        )
        for k in range(6)
    ]
    specs = []
    for _ in range(n):
        gpus = int(rng.choice([1, 2, 4, 8]))
        specs.append(
            spec(
                gpus=gpus,
                single_node=True,
                runtime_s=float(rng.uniform(1800, 12 * 3600)),
                datasets=(sets[int(rng.integers(len(sets)))],) if data else (),
                spot_ok=bool(rng.random() < 0.3),
                gpu_models=("A100-80GB",) if rng.random() < 0.2 else (),
            )
        )
    return build_problem(
        catalog, specs, [f"j{i}" for i in range(n)], [s.datasets for s in specs], cap, NOW, settings=NO_WAIT
    )


def optimum(problem: PlacementProblem) -> float:
    """Exact MILP of the relaxed model (aggregate GPUs per pool and site quota, shared copies)."""
    p = problem
    not_now = int(Reason.SITE_UNAVAILABLE | Reason.CAPACITY | Reason.BUDGET)
    usable = p.static_ok() & ((p.reasons & not_now) == 0)
    n_sites = len(p.catalog.sites)
    fixed = np.where(p.dataset_source == np.arange(n_sites)[None, :], 0.0, p.dataset_egress_usd + p.dataset_storage_usd)
    solver = pywraplp.Solver.CreateSolver("SCIP")
    x = {(j, o): solver.BoolVar("") for j in range(p.n_jobs) for o in np.flatnonzero(usable[j]).tolist()}
    y = {}
    for j, d in zip(*(a.tolist() for a in p.job_dataset), strict=True):
        for o in np.flatnonzero(usable[j]).tolist():
            s = int(p.options.site[o])
            if fixed[d, s] > 0:
                y.setdefault((d, s), solver.BoolVar(""))
                solver.Add(x[j, o] <= y[d, s])
    for j in range(p.n_jobs):
        solver.Add(sum(x[j, o] for o in np.flatnonzero(usable[j]).tolist()) == 1)
    g = [d.total_milli / FULL for d in p.demands]
    for k in range(len(p.catalog.pools)):
        terms = [g[j] * v for (j, o), v in x.items() if int(p.options.pool[o]) == k]
        if terms:
            solver.Add(sum(terms) <= p.capacity.free_milli(k) / FULL)
    for s, site in enumerate(p.catalog.sites):
        terms = [g[j] * v for (j, o), v in x.items() if int(p.options.site[o]) == s]
        if terms and site.burst_quota_gpus is not None:
            solver.Add(sum(terms) <= p.capacity.site_quota_free[s] / FULL)
    solver.Minimize(
        sum(float(p.compute_usd[j, o]) * v for (j, o), v in x.items())
        + sum(float(fixed[d, s]) * v for (d, s), v in y.items())
    )
    assert solver.Solve() == pywraplp.Solver.OPTIMAL
    return float(solver.Objective().Value())


def joint_cost(problem: PlacementProblem, **settings: object) -> tuple[float, list]:
    result = JointPlacer(JointSettings(**settings)).place(problem)  # type: ignore[arg-type]
    decisions = list(result.decisions)
    replay(problem, decisions)
    check_rules(problem, result)
    assert all(d.placed for d in decisions)
    return plan_cost(problem, decisions).total_usd, decisions


# ----------------------------------------------------------------------------- groups of constraints


@pytest.mark.parametrize("seed", range(3))
def test_pool_capacity_alone_is_solved_to_optimality(catalog, seed):
    p = instance(catalog, seed, data=False)
    best = optimum(p)
    cost, _ = joint_cost(p)
    # 40 jobs: rounding the one job the LP splits between pools can cost ~1% of so small a bill
    assert best - 1e-6 <= cost <= best * 1.015


def test_site_quota_is_shared_by_the_site_pools(catalog):
    # a quota of 16 GPUs at the cheapest cloud: the rest must go elsewhere, optimally
    sites = tuple(replace(s, burst_quota_gpus=16) if s.name == "lambda-us-south-1" else s for s in catalog.sites)
    cat = catalog.with_changes(sites=sites)
    p = instance(cat, 5, data=False, onprem_busy=1.0)
    cost, decisions = joint_cost(p)
    lam = cat.site_index["lambda-us-south-1"]
    on_lambda = sum(p.demands[d.job].total_milli for d in decisions if int(p.options.site[d.option]) == lam)
    assert 0 < on_lambda <= 16 * FULL
    assert cost <= optimum(p) * 1.015


@pytest.mark.parametrize("seed", range(3))
def test_shared_copies_land_near_the_optimum(catalog, seed):
    p = instance(catalog, 10 + seed)
    best = optimum(p)
    cost, _ = joint_cost(p)
    assert best - 1e-6 <= cost <= best * 1.03


def test_many_readers_move_the_data_once_few_readers_move_the_compute(catalog):
    big = Dataset("corpus", 20_000.0, ("aws-us-east-1",), "internal")  # $1,800 to copy out over the internet
    one = [spec(gpus=8, single_node=True, runtime_s=3600, datasets=(big,), gpu_models=("H100-80GB",))]
    p = build_problem(catalog, one, ["a"], [(big,)], CapacityState.empty(catalog), NOW, settings=NO_WAIT)
    _, (d,) = joint_cost(p)
    assert p.catalog.pools[int(p.options.pool[d.option])].site in ("aws-us-east-1", "aws-us-west-2", "aws-eu-central-1")
    many = one * 60  # 60 x 8 H100-hours: $3,300 cheaper on lambda/on-prem if the copy is shared
    p = build_problem(
        catalog, many, [f"j{i}" for i in range(60)], [(big,)] * 60, CapacityState.empty(catalog), NOW, settings=NO_WAIT
    )
    cost, decisions = joint_cost(p)
    t = transfers(p, [d.job for d in decisions], [d.option for d in decisions])
    assert len(t.dataset) >= 1 and (t.readers >= 8).all()  # copies are shared, never one per job
    assert cost <= optimum(p) * 1.01


def test_budget_is_respected_by_the_joint_plan(catalog):
    specs = [spec(gpus=4, single_node=True, runtime_s=7200, tags={"cost_center": "cc"}) for _ in range(10)]
    p = build_problem(
        catalog,
        specs,
        [f"j{i}" for i in range(10)],
        [()] * 10,
        CapacityState.empty(catalog),
        NOW,
        budget_remaining_usd={"cc": 40.0},
        settings=NO_WAIT,
    )
    result = JointPlacer().place(p)
    check_rules(p, result)
    placed = [d for d in result.decisions if d.placed]
    assert 0 < len(placed) < 10
    assert all(d.reason & int(Reason.BUDGET) for d in result.decisions if not d.placed)


def test_eviction_repair_gives_a_higher_tier_the_capacity_a_lower_one_holds(catalog):
    cap = CapacityState.empty(catalog)
    fra = catalog.pool_index["onprem-fra/a100"]
    for _ in range(7):
        cap.place(fra, Demand(gpus=8, single_node=True))
    low = spec(gpus=8, single_node=True, priority=0)  # can also run in the cloud
    high = spec(gpus=8, single_node=True, priority=3, allowed_sites=("onprem-fra",))
    p = build_problem(catalog, [low, high], ["low", "high"], [(), ()], cap, NOW, settings=NO_WAIT)
    state = _State(p, JointSettings(), time.perf_counter())
    o_low = next(o for o in range(p.n_options) if int(p.options.pool[o]) == fra and state.usable[0, o])
    assert state._try(0, o_low)  # the low tier holds the last free node
    assert state.option[1] < 0 and not state._fallback(1)
    assert state.protect_priority(np.array([1, 0])) == 1
    assert int(p.options.pool[state.option[1]]) == fra
    assert state.option[0] >= 0 and int(p.options.pool[state.option[0]]) != fra  # the evicted job moved on


def test_time_limit_returns_a_valid_plan(catalog):
    p = instance(catalog, 3, n=60)
    result = JointPlacer(JointSettings(time_limit_s=0.0)).place(p)
    check_rules(p, result)
    check_priority(p, result, replay(p, list(result.decisions)))
    assert result.stats["timed_out"] == 1.0
    assert sum(d.placed for d in result.decisions) == 60


@pytest.mark.parametrize("seed", range(4, 7))
def test_partitioned_solve_stays_close_to_the_whole(catalog, seed):
    # POP on the capacity part of the problem (no shared copies: they add heuristic noise of their own)
    p = instance(catalog, seed, n=200, data=False)
    whole, _ = joint_cost(p)
    parts, _ = joint_cost(p, part_jobs=60)
    assert JointPlacer(JointSettings(part_jobs=60)).place(p).stats["parts"] >= 3
    assert parts <= whole * 1.02


def test_same_seed_same_plan_with_partitions(catalog):
    p = instance(catalog, 8, n=80)
    a = JointPlacer(JointSettings(part_jobs=20, seed=7)).place(p)
    b = JointPlacer(JointSettings(part_jobs=20, seed=7)).place(p)
    assert [(d.option, d.bindings) for d in a.decisions] == [(d.option, d.bindings) for d in b.decisions]


# ----------------------------------------------------------------------------- bound and sharing


@pytest.mark.parametrize("seed", range(4))
def test_lower_bound_never_exceeds_the_optimum(catalog, seed):
    p = instance(catalog, 20 + seed)
    best = optimum(p)
    cost, decisions = joint_cost(p)
    bound = lower_bound(p, range(p.n_jobs), [d.option for d in decisions], sweeps=30)
    assert bound.lower_usd <= best + 1e-6 <= cost + 2e-6
    assert bound.lower_usd >= 0.9 * best  # and it is not vacuous


def test_lower_bound_refuses_a_set_no_plan_can_place(catalog):
    p = build_problem(
        catalog,
        [spec(datasets=("eu-customer-support-2026",), allowed_jurisdictions=("US",))],
        ["x"],
        [(catalog.datasets["eu-customer-support-2026"],)],
        CapacityState.empty(catalog),
        NOW,
    )
    with pytest.raises(ValueError, match="jobs: some job has no usable option"):
        lower_bound(p, [0])


def test_a_copy_is_paid_once_and_split_equally(catalog):
    ds = Dataset("x", 1_000.0, ("aws-us-east-1",), "internal")
    specs = [spec(datasets=(ds,)) for _ in range(3)]
    p = build_problem(catalog, specs, ["a", "b", "c"], [(ds,)] * 3, CapacityState.empty(catalog), NOW)
    gcp = next(o for o in range(p.n_options) if p.catalog.pools[int(p.options.pool[o])].site == "gcp-us-central1")
    home = next(o for o in range(p.n_options) if p.catalog.pools[int(p.options.pool[o])].site == "aws-us-east-1")
    from placers.result import Decision

    decisions = [Decision(job=0, option=gcp), Decision(job=1, option=gcp), Decision(job=2, option=home)]
    bill = plan_cost(p, decisions)
    assert bill.egress_usd == pytest.approx(p.egress_usd[0, gcp])  # once, not twice
    assert bill.storage_usd == pytest.approx(p.storage_usd[0, gcp])
    priced, replicas = attribute(p, decisions)
    assert replicas == {"x": ("gcp-us-central1",)}
    assert priced[0].cost.egress_usd == pytest.approx(p.egress_usd[0, gcp] / 2) == priced[1].cost.egress_usd
    assert priced[2].cost.egress_usd == 0 and priced[2].data_moves == ()
    assert sum(d.cost.total_usd for d in priced) == pytest.approx(bill.total_usd)
