from __future__ import annotations

import numpy as np
import pytest

from placers.capacity import CapacityState, Demand
from placers.domain import Dataset, InferenceSpec, JobKind
from placers.problem import Options, Reason, build_problem
from tests.conftest import spec

NOW = 1_800_000_000.0


def build(catalog, specs, capacity=None, **kw):
    from scheduler.admission import resolve_datasets

    return build_problem(
        catalog,
        specs,
        [f"j{i}" for i in range(len(specs))],
        [resolve_datasets(s, catalog) for s in specs],
        capacity or CapacityState.empty(catalog),
        NOW,
        **kw,
    )


def col(problem, pool_key, spot=False):
    o = problem.options
    p = problem.catalog.pool_index[pool_key]
    return int(np.flatnonzero((o.pool == p) & (o.spot == spot))[0])


def test_options_cover_every_pool_and_spot_offer(catalog):
    opts = Options.of(catalog)
    assert len(opts) == len(catalog.pools) + sum(1 for p in catalog.pools if p.spot_usd_per_gpu_hour)


def test_costs_by_hand(catalog):
    p = build(catalog, [spec(gpus=4, runtime_s=3600, datasets=("imagenet-21k",))])
    o = col(p, "aws-us-east-1/p5")
    runtime = 3600 / 2.2
    assert p.runtime_s[0, o] == pytest.approx(runtime)
    assert p.compute_usd[0, o] == pytest.approx(4 * runtime / 3600 * 6.88)
    # cheapest source of imagenet-21k for aws-us-east-1 is onprem-sjc (free egress, 20 Gbps uplink)
    assert p.egress_usd[0, o] == 0.0
    assert p.transfer_s[0, o] == pytest.approx(1300 * 8 / 20)
    assert p.storage_usd[0, o] == pytest.approx(1300 * 0.023 * 7 * 24 / 730)
    home = col(p, "onprem-sjc/h100")
    assert (p.egress_usd[0, home], p.transfer_s[0, home], p.storage_usd[0, home]) == (0, 0, 0)
    moves = p.data_moves(0, o)
    assert [(m.dataset_id, m.from_site, m.to_site) for m in moves] == [("imagenet-21k", "onprem-sjc", "aws-us-east-1")]


def test_egress_from_cloud_replica(catalog):
    p = build(catalog, [spec(gpus=1, datasets=("common-crawl-2026",))])  # 40 TB in aws-us-east-1
    o = col(p, "gcp-us-central1/a2-ultra")
    assert p.egress_usd[0, o] == pytest.approx(40_000 * 0.09)
    assert p.transfer_s[0, o] == pytest.approx(40_000 * 8 / 25)
    assert p.egress_usd[0, col(p, "aws-us-west-2/p5")] == pytest.approx(40_000 * 0.02)


def test_cached_replica_makes_data_local(catalog):
    p = build(
        catalog, [spec(datasets=("common-crawl-2026",))], extra_replicas={"common-crawl-2026": ["gcp-us-central1"]}
    )
    o = col(p, "gcp-us-central1/a2-ultra")
    assert p.egress_usd[0, o] == 0 and p.storage_usd[0, o] == 0


def test_residency_reason_for_eu_data_outside_eu(catalog):
    p = build(catalog, [spec(datasets=("eu-customer-support-2026",))])
    for o in range(p.n_options):
        site = catalog.site(catalog.pools[p.options.pool[o]].site)
        has = bool(p.reasons[0, o] & Reason.RESIDENCY)
        assert has == (site.jurisdiction != "EU")


def test_inline_hipaa_dataset(catalog):
    d = Dataset("scans", 10, ("onprem-sjc",), "hipaa")
    p = build(catalog, [spec(datasets=(d,))])
    assert p.reasons[0, col(p, "aws-eu-central-1/p5")] & Reason.RESIDENCY
    assert not p.reasons[0, col(p, "aws-us-east-1/p5")] & Reason.RESIDENCY


def test_deadline_reason_counts_transfer_and_runtime(catalog):
    # 40 TB to GCP takes 40000*8/25 s = 3.6 h; runtime 1 h on A100: a 4 h deadline is missed there only
    s = spec(datasets=("common-crawl-2026",), deadline_at=NOW + 4 * 3600)
    p = build(catalog, [s])
    assert p.reasons[0, col(p, "gcp-us-central1/a2-ultra")] & Reason.DEADLINE
    assert not p.reasons[0, col(p, "aws-us-east-1/p4de")] & Reason.DEADLINE


def test_latency_slo(catalog):
    s = spec(
        kind=JobKind.INFERENCE,
        runtime_s=0,
        inference=InferenceSpec(latency_slo_ms=20, user_regions=("eu-west", "eu-central")),
    )
    p = build(catalog, [s])
    assert not p.reasons[0, col(p, "aws-eu-central-1/g6e")] & Reason.LATENCY  # 15 / 4 ms
    assert p.reasons[0, col(p, "aws-us-east-1/g6e")] & Reason.LATENCY


def test_gpu_model_shape_spot_dedicated_and_cost_cap(catalog):
    p = build(
        catalog,
        [
            spec(gpu_models=("H100-80GB",)),
            spec(gpus=16, single_node=True),
            spec(max_cost_usd=1.0, gpus=8),
        ],
    )
    assert p.reasons[0, col(p, "onprem-sjc/a100")] & Reason.GPU_MODEL
    assert not p.reasons[0, col(p, "onprem-sjc/h100")] & Reason.GPU_MODEL
    assert p.reasons[1, col(p, "onprem-sjc/h100")] & Reason.NODE_SHAPE
    assert p.reasons[0, col(p, "aws-us-east-1/p5", spot=True)] & Reason.SPOT
    assert p.reasons[0, col(p, "onprem-fra/l40s-inference")] & Reason.DEDICATED
    assert p.reasons[2, col(p, "aws-us-east-1/p5")] & Reason.MAX_COST
    assert p.never_fits().tolist() == [False, True, True]


def test_capacity_reason_reflects_the_snapshot(catalog):
    cap = CapacityState.empty(catalog)
    h100 = catalog.pool_index["onprem-sjc/h100"]
    for _ in range(16):
        cap.place(h100, Demand(gpus=7, single_node=True))
    p = build(catalog, [spec(gpus=1), spec(gpus=2, single_node=True)], capacity=cap)
    o = col(p, "onprem-sjc/h100")
    assert not p.reasons[0, o] & Reason.CAPACITY
    assert p.reasons[1, o] & Reason.CAPACITY
    assert not p.never_fits().any()


def test_budget_reason(catalog):
    p = build(
        catalog,
        [spec(gpus=8, tags={"cost_center": "cc-a"}), spec(gpus=8, tags={"cost_center": "cc-b"})],
        budget_remaining_usd={"cc-a": 1.0},
    )
    assert (p.reasons[0] & Reason.BUDGET).all()
    assert not (p.reasons[1] & Reason.BUDGET).any()


def test_unavailable_site_is_transient(catalog):
    p = build(catalog, [spec()], unavailable_sites=frozenset({"onprem-sjc"}))
    assert p.reasons[0, col(p, "onprem-sjc/h100")] & Reason.SITE_UNAVAILABLE
    assert not Reason.SITE_UNAVAILABLE.permanent and Reason.RESIDENCY.permanent
