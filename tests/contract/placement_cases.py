"""Seeded random placement problems and the checks every placer must pass.

The instances are small (tens of jobs) and deliberately tight: on-prem pools partly taken, cloud
quotas shrunk, gangs, shared GPUs, inference replicas, EU and HIPAA data, deadlines, cost caps,
budgets, unavailable sites and three priority tiers, so that every rule is exercised.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from placers.capacity import FULL, CapacityState, Demand
from placers.catalog import Catalog
from placers.domain import CostBreakdown, Dataset, InferenceSpec, JobKind, JobSpec, NodeBinding, Placement
from placers.problem import PERMANENT, PlacementProblem, ProblemSettings, Reason, build_problem
from placers.result import Decision, PlacementResult
from placers.waiting import ReleaseTimeline, WaitPolicy, WaitRule

NOW = 1_800_000_000.0

INLINE = (
    Dataset("scans-hipaa", 400.0, ("onprem-sjc",), "hipaa"),
    Dataset("eu-logs", 3_000.0, ("gcp-europe-west4",), "eu-gdpr"),
    Dataset("weights", 80.0, ("aws-us-east-1",), "internal"),
)


def tight_catalog(catalog: Catalog, rng: np.random.Generator) -> Catalog:
    """The catalog with cloud quotas cut to a few nodes, so capacity really binds."""
    sites = []
    for s in catalog.sites:
        if s.onprem:
            sites.append(s)
            continue
        pools = []
        for p in s.pools:
            g = int(rng.integers(1, 4)) * p.gpus_per_node
            pools.append(replace(p, max_gpus=g, nodes=max(1, g // p.gpus_per_node)))
        quota = int(sum(p.max_gpus for p in pools) * rng.uniform(0.5, 1.0))
        sites.append(replace(s, pools=tuple(pools), burst_quota_gpus=quota))
    return catalog.with_changes(sites=tuple(sites))


def random_problem(catalog: Catalog, seed: int, n_jobs: int = 40, *, waiting: bool = False) -> PlacementProblem:
    """`waiting`: the deadline rule (Starburst's constant wait for jobs without a deadline) with a
    release timeline from the running jobs, so that some jobs are deferred."""
    rng = np.random.default_rng(seed)
    cat = tight_catalog(catalog, rng)
    cap = CapacityState.empty(cat)
    running: dict[str, Placement] = {}
    # take part of the on-prem pools and of the cloud quotas, as running jobs would
    for i, pool in enumerate(cat.pools):
        for k in range(int(rng.integers(0, pool.nodes + 1))):
            g = int(rng.choice([1, 2, 4, pool.gpus_per_node]))
            b = cap.place(i, Demand(gpus=min(g, pool.gpus_per_node), single_node=True))
            if b is not None and not pool.elastic:
                running[f"r{i}-{k}"] = Placement(
                    pool.site,
                    pool.name,
                    pool.gpu_model,
                    False,
                    NOW - 600.0,
                    NOW + float(rng.uniform(300, 6 * 3600)),
                    CostBreakdown(),
                    0.0,
                    b,
                )
    catalog_ds = list(cat.datasets.values())
    specs: list[JobSpec] = []
    for j in range(n_jobs):
        kind = JobKind.INFERENCE if rng.random() < 0.12 else rng.choice([JobKind.TRAINING, JobKind.BATCH])
        gpus = int(rng.choice([1, 1, 2, 4, 8, 16]))
        milli = 1000
        if gpus == 1 and rng.random() < 0.25:
            milli = int(rng.choice([250, 500]))
        ds: tuple[str | Dataset, ...] = ()
        r = rng.random()
        if r < 0.5:
            ds = (catalog_ds[int(rng.integers(len(catalog_ds)))].id,)
        elif r < 0.75:
            ds = (INLINE[int(rng.integers(len(INLINE)))],)
        inference = None
        deadline = None
        runtime = float(rng.uniform(600, 20 * 3600))
        if kind is JobKind.INFERENCE:
            inference = InferenceSpec(
                latency_slo_ms=float(rng.choice([0, 20, 60])),
                user_regions=(str(rng.choice(["us-east", "eu-west", "us-west"])),),
                replicas=int(rng.integers(1, 3)),
                dedicated=bool(rng.random() < 0.3),
                spread=bool(rng.random() < 0.5),
            )
            gpus = min(gpus, 4)
            milli = 1000
        elif rng.random() < 0.4:
            deadline = NOW + runtime * float(rng.uniform(0.5, 4.0))
        specs.append(
            JobSpec(
                name=f"job-{j}",
                kind=kind,
                gpus=gpus,
                gpu_milli=milli,
                entrypoint="run",
                single_node=bool(gpus <= 8 and rng.random() < 0.8),
                runtime_s=runtime,
                deadline_at=deadline,
                priority=int(rng.choice([0, 0, 1, 2])),
                gpu_models=("A100-80GB",) if rng.random() < 0.2 else (),
                datasets=ds,
                allowed_jurisdictions=("EU",) if rng.random() < 0.1 else (),
                max_cost_usd=float(rng.uniform(20, 400)) if rng.random() < 0.15 else None,
                spot_ok=bool(rng.random() < 0.4),
                inference=inference,
                tags={"cost_center": f"cc-{int(rng.integers(3))}"},
                cpus=float(rng.choice([0, 8, 32])),
                memory_gb=float(rng.choice([0, 64, 256])),
            )
        )
    resolved = [tuple(d if isinstance(d, Dataset) else cat.datasets[d] for d in s.datasets) for s in specs]
    down = frozenset({str(rng.choice([s.name for s in cat.sites]))}) if rng.random() < 0.3 else frozenset()
    budgets = {"cc-0": float(rng.uniform(50, 2_000))} if rng.random() < 0.6 else {}
    return build_problem(
        cat,
        specs,
        [f"j{i}" for i in range(n_jobs)],
        resolved,
        cap,
        NOW,
        unavailable_sites=down,
        budget_remaining_usd=budgets,
        settings=ProblemSettings(
            waiting=WaitRule(fallback=WaitPolicy.CONSTANT, constant_s=1800.0)
            if waiting
            else WaitRule(policy=WaitPolicy.NO_WAIT)
        ),
        submitted_at=[NOW - float(x) for x in rng.uniform(0, 3600, n_jobs)],
        release=ReleaseTimeline.from_allocations(cat, running, NOW) if waiting else None,
    )


# ------------------------------------------------------------------------------------------ checks


def replay(problem: PlacementProblem, decisions: list[Decision]) -> CapacityState:
    """Apply every placement to a fresh copy of the problem's capacity, checking each binding first."""
    cap = problem.capacity.copy()
    cat = problem.catalog
    for d in decisions:
        if not d.placed:
            continue
        pool_index = int(problem.options.pool[d.option])
        pool = cat.pools[pool_index]
        demand = problem.demands[d.job]
        if pool.elastic:
            assert d.bindings == (), f"job {d.job}: cloud pools take no node bindings"
            site = cat.site_index[pool.site]
            assert demand.total_milli <= cap.elastic_free[pool_index], f"job {d.job}: over the quota of {pool.key}"
            assert demand.total_milli <= cap.site_quota_free[site], f"job {d.job}: over the burst quota of {pool.site}"
            if demand.single_node:
                assert demand.gpus <= pool.gpus_per_node, f"job {d.job}: gang larger than an instance"
        else:
            _check_bindings(cap, pool_index, demand, d.bindings, d.job)
        cap.take(pool_index, demand, d.bindings)
    for i in range(len(cat.pools)):
        assert (cap.gpu_free[i] >= 0).all() and (cap.cpu_free[i] >= 0).all() and (cap.mem_free[i] >= 0).all()
    assert (cap.elastic_free >= 0).all() and (cap.site_quota_free >= 0).all()
    return cap


def _check_bindings(cap: CapacityState, pool: int, demand: Demand, bindings: tuple[NodeBinding, ...], job: int) -> None:
    g = cap.gpu_free[pool]
    slots = [(b.node, s) for b in bindings for s in b.gpu_slots]
    assert len(slots) == len(set(slots)), f"job {job}: a GPU slot bound twice"
    assert len(slots) == demand.gpus * demand.replicas, f"job {job}: bound {len(slots)} GPUs"
    for b in bindings:
        assert b.gpu_milli == demand.gpu_milli, f"job {job}: wrong share of a GPU"
        for s in b.gpu_slots:
            assert g[b.node, s] >= b.gpu_milli, f"job {job}: node {b.node} slot {s} is not free"
        assert cap.cpu_free[pool][b.node] >= b.cpu_milli and cap.mem_free[pool][b.node] >= b.memory_mib
    if demand.single_node and demand.gpu_milli == FULL:
        per_node: dict[int, int] = {}
        for b in bindings:
            per_node[b.node] = per_node.get(b.node, 0) + len(b.gpu_slots)
        assert all(n % demand.gpus == 0 for n in per_node.values()), f"job {job}: a gang split across nodes"


def check_rules(problem: PlacementProblem, result: PlacementResult) -> None:
    decisions = list(result.decisions)
    assert sorted(d.job for d in decisions) == list(range(problem.n_jobs)), "one decision per job"
    total = problem.total_usd
    spent: dict[str, float] = {}
    for d in decisions:
        if d.placed:
            bits = int(problem.reasons[d.job, d.option])
            assert not bits & int(PERMANENT), f"job {d.job} placed against {Reason(bits & int(PERMANENT))!r}"
            assert not bits & int(Reason.SITE_UNAVAILABLE), f"job {d.job} placed on an unavailable site"
            assert not bits & int(Reason.CAPACITY), f"job {d.job} placed where it could not fit even alone"
            key = problem.budget_key[d.job]
            if key is not None:
                spent[key] = spent.get(key, 0.0) + float(total[d.job, d.option])
            assert d.cost is not None and d.cost.total_usd <= float(total[d.job, d.option]) + 1e-6
        else:
            assert d.reason != 0, f"job {d.job} left unplaced without a reason"
            if d.reason & int(Reason.DEFERRED):
                assert d.retry_at is not None and d.retry_at > problem.now
    for key, usd in spent.items():
        assert usd <= problem.budget_remaining_usd[key] + 1e-6, f"budget {key} overdrawn: {usd}"


def check_priority(problem: PlacementProblem, result: PlacementResult, final: CapacityState) -> None:
    """No unplaced job (not deliberately waiting) fits where a lower-tier job took capacity."""
    decisions = list(result.decisions)
    total = problem.total_usd
    not_now = int(PERMANENT | Reason.SITE_UNAVAILABLE | Reason.CAPACITY)
    spent: dict[str, float] = {}
    for d in decisions:
        key = problem.budget_key[d.job]
        if d.placed and key is not None:
            spent[key] = spent.get(key, 0.0) + float(total[d.job, d.option])
    placed = [d for d in decisions if d.placed]
    for h in decisions:
        if h.placed or h.reason & int(Reason.DEFERRED):
            continue
        usable = np.flatnonzero((problem.reasons[h.job] & not_now) == 0)
        key_h = problem.budget_key[h.job]
        for low in placed:
            if problem.priority[low.job] >= problem.priority[h.job]:
                continue
            pool = int(problem.options.pool[low.option])
            mine = [int(o) for o in usable if int(problem.options.pool[o]) == pool]
            if not mine:
                continue
            room = final.copy()
            room.release(pool, problem.demands[low.job], low.bindings)
            if room.find(pool, problem.demands[h.job]) is None:
                continue
            if key_h is not None:
                left = problem.budget_remaining_usd[key_h] - spent.get(key_h, 0.0)
                if problem.budget_key[low.job] == key_h:
                    left += float(total[low.job, low.option])
                if min(float(total[h.job, o]) for o in mine) > left + 1e-9:
                    continue
            raise AssertionError(
                f"job {h.job} (tier {problem.priority[h.job]}) unplaced while job {low.job} "
                f"(tier {problem.priority[low.job]}) holds {problem.catalog.pools[pool].key} it could use"
            )
