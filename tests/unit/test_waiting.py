"""The waiting rule (placers.waiting): policies, the release timeline, reservations, service plumbing."""

from __future__ import annotations

import math

import pytest

from placers.capacity import CapacityState, Demand
from placers.domain import CostBreakdown, JobState, NodeBinding, Placement
from placers.greedy import GreedyPlacer
from placers.problem import ProblemSettings, Reason, build_problem
from placers.registry import PLACERS, make_placer
from placers.waiting import ReleaseTimeline, WaitPlanner, WaitPolicy, WaitRule
from scheduler.admission import resolve_datasets
from scheduler.executors.sim import SimExecutor
from scheduler.service import SchedulerService
from scheduler.settings import CycleSettings
from scheduler.store.memory import MemoryStore
from tests.conftest import spec

NOW = 1_800_000_000.0
HOUR = 3600.0
FRA = "onprem-fra/a100"  # 8 nodes x 8 A100, the cheapest EU option


def fill_pool(catalog, key, finish_at):
    """A capacity state with every node of `key` taken, and the allocations that free them at `finish_at[i]`."""
    cap = CapacityState.empty(catalog)
    p = catalog.pool_index[key]
    pool = catalog.pools[p]
    allocations = {}
    for i in range(pool.nodes):
        b = cap.place(p, Demand(gpus=pool.gpus_per_node, single_node=True))
        assert b is not None
        allocations[f"run-{i}"] = Placement(
            site=pool.site,
            pool=pool.name,
            gpu_model=pool.gpu_model,
            spot=False,
            start_at=NOW - HOUR,
            finish_at=finish_at[i],
            cost=CostBreakdown(),
            transfer_s=0.0,
            bindings=b,
        )
    return cap, allocations


def problem_with(catalog, specs, cap, allocations, rule, submitted_at=None, now=NOW):
    return build_problem(
        catalog,
        specs,
        [f"j{i}" for i in range(len(specs))],
        [resolve_datasets(s, catalog) for s in specs],
        cap,
        now,
        settings=ProblemSettings(waiting=rule),
        submitted_at=submitted_at,
        release=ReleaseTimeline.from_allocations(catalog, allocations, now),
    )


def eu_job(**kw):
    base = {"gpus": 8, "single_node": True, "runtime_s": 2 * HOUR, "allowed_jurisdictions": ("EU",)}
    base.update(kw)
    return spec(**base)


def site_of(problem, decision):
    return problem.catalog.pools[int(problem.options.pool[decision.option])].key


# ----------------------------------------------------------------------------- the rule


def test_rule_validation_names_the_field():
    with pytest.raises(ValueError, match="policy: unknown waiting policy 'sometimes'"):
        WaitRule(policy="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fallback"):
        WaitRule(fallback=WaitPolicy.DEADLINE)
    with pytest.raises(ValueError, match="constant_s"):
        WaitRule(constant_s=-1)
    with pytest.raises(ValueError, match="factor"):
        WaitRule(factor=math.nan)
    assert WaitRule(policy="constant").policy is WaitPolicy.CONSTANT  # type: ignore[arg-type]


def test_timeouts_of_the_starburst_policies():
    r = WaitRule(constant_s=600, factor=0.5)
    assert r.timeout_at(WaitPolicy.NO_WAIT, 100, 3600, 4) == 100
    assert r.timeout_at(WaitPolicy.CONSTANT, 100, 3600, 4) == 700
    assert r.timeout_at(WaitPolicy.RUNTIME, 100, 3600, 4) == 100 + 1800
    assert r.timeout_at(WaitPolicy.COMPUTE, 100, 3600, 4) == 100 + 1800 * 4
    assert r.timeout_at(WaitPolicy.DEADLINE, 100, 3600, 4) == math.inf
    assert WaitRule().policy_for(True) is WaitPolicy.DEADLINE
    assert WaitRule(fallback=WaitPolicy.CONSTANT).policy_for(False) is WaitPolicy.CONSTANT


# ----------------------------------------------------------------------------- the timeline


def test_timeline_from_allocations_keeps_future_node_releases_in_order(catalog):
    _, alloc = fill_pool(catalog, FRA, [NOW + (8 - i) * HOUR for i in range(8)])
    alloc["service"] = Placement(
        "onprem-fra", "a100", "A100-80GB", False, NOW, None, CostBreakdown(), 0.0, alloc["run-0"].bindings
    )
    alloc["overdue"] = Placement(
        "onprem-fra", "a100", "A100-80GB", False, NOW, NOW - 1, CostBreakdown(), 0.0, alloc["run-1"].bindings
    )
    alloc["cloud"] = Placement("aws-us-east-1", "p5", "H100-80GB", False, NOW, NOW + 10, CostBreakdown(), 0.0, ())
    tl = ReleaseTimeline.from_allocations(catalog, alloc, NOW)
    p = catalog.pool_index[FRA]
    assert list(tl.releases) == [p]
    times = [r.at for r in tl.of(p)]
    assert times == sorted(times) and len(times) == 8 and times[0] == NOW + HOUR
    assert all(r.milli == 8000 for r in tl.of(p))


def test_first_fit_at_follows_node_releases(catalog):
    cap, alloc = fill_pool(catalog, FRA, [NOW + (i + 1) * HOUR for i in range(8)])
    # free only 4 GPUs of the first-ending node at +0.5 h: a 4-GPU gang fits then, an 8-GPU gang at +1 h
    first = alloc["run-0"]
    half = NodeBinding(first.bindings[0].node, first.bindings[0].gpu_slots[:4])
    alloc["run-0"] = Placement(**{**_fields(first), "bindings": (half,), "finish_at": NOW + 0.5 * HOUR})
    alloc["run-0b"] = Placement(
        **{**_fields(first), "bindings": (NodeBinding(half.node, first.bindings[0].gpu_slots[4:]),)}
    )
    tl = ReleaseTimeline.from_allocations(catalog, alloc, NOW)
    p = catalog.pool_index[FRA]
    assert tl.first_fit_at(cap, p, Demand(gpus=4, single_node=True)) == NOW + 0.5 * HOUR
    assert tl.first_fit_at(cap, p, Demand(gpus=8, single_node=True)) == NOW + HOUR
    assert tl.first_fit_at(cap, p, Demand(gpus=16)) == NOW + 2 * HOUR
    assert tl.first_fit_at(cap, p, Demand(gpus=80)) is None  # more than the pool
    assert cap.free_gpus(p) == 0  # asking changed nothing


def _fields(p: Placement) -> dict[str, object]:
    return {k: getattr(p, k) for k in Placement.__slots__}


# ----------------------------------------------------------------------------- policies in a placer


@pytest.mark.parametrize("placer", sorted(PLACERS))
def test_deadline_rule_waits_when_on_prem_frees_in_time(catalog, placer):
    cap, alloc = fill_pool(catalog, FRA, [NOW + HOUR] + [NOW + 20 * HOUR] * 7)
    p = problem_with(catalog, [eu_job(deadline_at=NOW + 4 * HOUR)], cap, alloc, WaitRule())
    d = make_placer(placer).place(p).decisions[0]
    assert not d.placed and d.reason == Reason.DEFERRED
    assert d.retry_at == NOW + HOUR
    assert "onprem-fra/a100" in d.note and "full until" in d.note


@pytest.mark.parametrize("placer", sorted(PLACERS))
def test_deadline_rule_bursts_when_release_comes_too_late(catalog, placer):
    cap, alloc = fill_pool(catalog, FRA, [NOW + 2.5 * HOUR] * 8)
    p = problem_with(catalog, [eu_job(deadline_at=NOW + 4 * HOUR)], cap, alloc, WaitRule())
    d = make_placer(placer).place(p).decisions[0]
    assert d.placed and catalog.pools[int(p.options.pool[d.option])].site != "onprem-fra"


def test_deadline_rule_without_timeline_or_deadline_does_not_wait(catalog):
    cap, alloc = fill_pool(catalog, FRA, [NOW + HOUR] * 8)
    no_deadline = problem_with(catalog, [eu_job()], cap, alloc, WaitRule())
    assert GreedyPlacer().place(no_deadline).decisions[0].placed
    blind = build_problem(
        catalog,
        [eu_job(deadline_at=NOW + 4 * HOUR)],
        ["j0"],
        [()],
        cap,
        NOW,
        settings=ProblemSettings(waiting=WaitRule()),
    )
    assert GreedyPlacer().place(blind).decisions[0].placed


def test_no_wait_bursts_at_once(catalog):
    cap, alloc = fill_pool(catalog, FRA, [NOW + HOUR] * 8)
    p = problem_with(catalog, [eu_job(deadline_at=NOW + 4 * HOUR)], cap, alloc, WaitRule(policy=WaitPolicy.NO_WAIT))
    assert GreedyPlacer().place(p).decisions[0].placed


def test_constant_wait_counts_from_submission_and_respects_the_deadline(catalog):
    cap, alloc = fill_pool(catalog, FRA, [NOW + 30 * HOUR] * 8)  # never frees in view: constant waits anyway
    rule = WaitRule(policy=WaitPolicy.CONSTANT, constant_s=HOUR)
    fresh = problem_with(catalog, [eu_job()], cap, alloc, rule, submitted_at=[NOW - 0.25 * HOUR])
    d = GreedyPlacer().place(fresh).decisions[0]
    assert not d.placed and d.reason == Reason.DEFERRED and d.retry_at == NOW + 0.75 * HOUR
    stale = problem_with(catalog, [eu_job()], cap, alloc, rule, submitted_at=[NOW - HOUR])
    assert GreedyPlacer().place(stale).decisions[0].placed
    # a deadline that leaves less slack than the constant caps the wait at the latest start
    short = eu_job(runtime_s=HOUR, deadline_at=NOW + 1.4 * HOUR)  # on-prem A100 would still make it
    tight = problem_with(catalog, [short], cap, alloc, rule)
    d = GreedyPlacer().place(tight).decisions[0]
    burst = problem_with(catalog, [short], cap, alloc, WaitRule(policy=WaitPolicy.NO_WAIT))
    o = GreedyPlacer().place(burst).decisions[0].option
    latest = NOW + 1.4 * HOUR - tight.transfer_s[0, o] - tight.runtime_s[0, o] - rule.margin_s
    assert latest < NOW + HOUR
    assert not d.placed and d.retry_at == pytest.approx(latest)


def test_runtime_and_compute_wait_scale_with_the_job(catalog):
    cap, alloc = fill_pool(catalog, FRA, [NOW + 30 * HOUR] * 8)
    small = eu_job(gpus=1, single_node=False, runtime_s=HOUR)
    big = eu_job(gpus=8, runtime_s=HOUR)
    for policy, expect in ((WaitPolicy.RUNTIME, (0.5, 0.5)), (WaitPolicy.COMPUTE, (0.5, 4.0))):
        rule = WaitRule(policy=policy, factor=0.5)
        p = problem_with(catalog, [small, big], cap, alloc, rule)
        ds = GreedyPlacer().place(p).decisions
        assert [d.retry_at for d in ds] == [NOW + e * HOUR for e in expect]


def test_two_waiters_never_count_on_the_same_freed_node(catalog):
    cap, alloc = fill_pool(catalog, FRA, [NOW + HOUR] + [NOW + 20 * HOUR] * 7)
    jobs = [eu_job(deadline_at=NOW + 4 * HOUR), eu_job(deadline_at=NOW + 4 * HOUR)]
    p = problem_with(catalog, jobs, cap, alloc, WaitRule())
    ds = GreedyPlacer().place(p).decisions
    assert sorted(d.reason == Reason.DEFERRED for d in ds) == [False, True]
    assert sum(d.placed for d in ds) == 1


def test_wait_is_only_for_a_cheaper_option(catalog):
    cap, alloc = fill_pool(catalog, FRA, [NOW + HOUR] * 8)
    p = problem_with(catalog, [eu_job(deadline_at=NOW + 4 * HOUR)], cap, alloc, WaitRule(min_saving_usd=1e6))
    assert GreedyPlacer().place(p).decisions[0].placed
    planner = WaitPlanner(p)
    assert planner.consider(0, -1, cap) is None


# ----------------------------------------------------------------------------- through the service


def test_service_defers_then_places_on_prem_when_it_frees(catalog, clock):
    store = MemoryStore(catalog)
    svc = SchedulerService(catalog, store, SimExecutor(clock, catalog), make_placer("greedy"), clock, CycleSettings())
    blockers = svc.submit(
        [spec(gpus=8, single_node=True, allowed_sites=("onprem-fra",), runtime_s=HOUR) for _ in range(8)]
    )
    svc.run_cycle()
    assert all(svc.get(b.id).state is JobState.PLACED for b, _ in blockers)
    ((job, _),) = svc.submit([eu_job(deadline_at=clock.now() + 4 * HOUR)])
    svc.run_cycle()
    waiting = svc.get(job.id)
    assert waiting.state is JobState.PENDING and "waiting for onprem-fra/a100" in waiting.reason
    assert svc.next_wakeup() == pytest.approx(clock.now() + HOUR)
    clock.set(svc.next_wakeup())
    svc.run_cycle()
    placed = svc.get(job.id)
    assert placed.state is JobState.PLACED and placed.placement.site == "onprem-fra"


def test_service_no_wait_setting_bursts(catalog, clock):
    store = MemoryStore(catalog)
    cycle = CycleSettings(wait_policy="no-wait")
    svc = SchedulerService(catalog, store, SimExecutor(clock, catalog), make_placer("greedy"), clock, cycle)
    svc.submit([spec(gpus=8, single_node=True, allowed_sites=("onprem-fra",), runtime_s=HOUR) for _ in range(8)])
    svc.run_cycle()
    ((job, _),) = svc.submit([eu_job(deadline_at=clock.now() + 4 * HOUR)])
    svc.run_cycle()
    got = svc.get(job.id)
    assert got.state is JobState.PLACED and got.placement.site != "onprem-fra"


def test_settings_reject_an_unknown_policy():
    with pytest.raises(ValueError, match="wait_policy"):
        CycleSettings(wait_policy="later")  # type: ignore[arg-type]
