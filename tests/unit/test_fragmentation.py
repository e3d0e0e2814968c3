"""Weng et al.'s fragmentation measure and the node choices built on it."""

from __future__ import annotations

import numpy as np
import pytest

from placers.capacity import FULL, CapacityState, Demand, NodeChoice, NodeChoiceError
from placers.catalog import parse_catalog
from placers.fragmentation import FragmentationModel, TaskMix, TaskShape


def mix(*shapes: tuple[TaskShape, float]) -> TaskMix:
    return TaskMix(tuple(s for s, _ in shapes), np.array([p for _, p in shapes]))


def test_fragment_is_what_the_task_cannot_use():
    half = FragmentationModel(mix((TaskShape(1, 500, 1000), 1.0)))
    gpu = np.array([[1000, 300, 500, 0], [1000, 300, 500, 0], [1000, 300, 500, 0]], dtype=np.int64)
    cpu = np.array([8000, 500, 8000], dtype=np.int64)
    access = np.array([[True], [True], [False]])
    frag = half.node_fragmentation(gpu, cpu, access)
    # fits: the 300 slot (and the empty one) cannot take a 500 share; too little CPU or the
    # wrong GPU model: all 1800 free milli are fragmented
    assert frag.tolist() == [300.0, 1800.0, 1800.0]


def test_popularity_weights_the_tasks():
    m = FragmentationModel(mix((TaskShape(1, 1000), 0.25), (TaskShape(2, 1000), 0.75)))
    gpu = np.array([[1000, 600]], dtype=np.int64)
    frag = m.node_fragmentation(gpu, np.array([0]), np.ones((1, 2), dtype=bool))
    # 1-GPU task: fits, 600 unusable; 2-GPU task: does not fit, 1600 unusable
    assert frag[0] == pytest.approx(0.25 * 600 + 0.75 * 1600)


@pytest.mark.parametrize("seed", range(5))
def test_growth_formulas_match_recomputing_after_the_placement(seed):
    rng = np.random.default_rng(seed)
    shapes = [
        (TaskShape(1, int(u), int(c)), float(p))
        for u, c, p in zip([250, 500, 700, 1000], [0, 2000, 4000, 1000], rng.dirichlet(np.ones(4)), strict=True)
    ]
    shapes.append((TaskShape(2, 1000, 3000), 0.0))
    total = sum(p for _, p in shapes)
    m = FragmentationModel(mix(*[(s, p / total) for s, p in shapes]))
    n, slots = 40, 8
    gpu = rng.choice([0, 100, 300, 500, 650, 1000], size=(n, slots), p=[0.1, 0.1, 0.1, 0.1, 0.1, 0.5]).astype(np.int64)
    cpu = rng.integers(0, 20_000, size=n).astype(np.int64)
    access = rng.random((n, len(shapes))) < 0.9
    before = m.node_fragmentation(gpu, cpu, access)

    whole = m.growth_whole(gpu, cpu, access, gpus=1, cpu_milli=1500)
    for i in range(n):
        if (gpu[i] == FULL).sum() < 1:
            continue
        g = gpu.copy()
        g[i, np.flatnonzero(g[i] == FULL)[0]] = 0
        c = cpu.copy()
        c[i] -= 1500
        assert whole[i] == pytest.approx(m.node_fragmentation(g, c, access)[i] - before[i])

    nodes, cols = np.nonzero(gpu >= 250)
    shared = m.growth_shared(gpu, cpu, access, nodes, cols, gpu_milli=250, cpu_milli=700)
    for k, (i, s) in enumerate(zip(nodes, cols, strict=True)):
        g = gpu.copy()
        g[i, s] -= 250
        c = cpu.copy()
        c[i] -= 700
        assert shared[k] == pytest.approx(m.node_fragmentation(g, c, access)[i] - before[i])


def test_typical_tasks_cover_the_most_popular_shapes():
    shapes = [TaskShape(1, 1000)] * 50 + [TaskShape(1, 500)] * 30 + [TaskShape(8, 1000)] * 20 + [TaskShape(0, 0)] * 90
    mix_ = TaskMix.from_shapes(shapes, coverage=0.6, step=1, include_cpu=False)
    assert mix_.shapes == (TaskShape(1, 1000), TaskShape(1, 500))  # 80% of the GPU tasks
    assert mix_.popularity.tolist() == pytest.approx([50 / 80, 30 / 80])
    with_cpu = TaskMix.from_shapes(shapes, coverage=0.6, step=1)  # the FGD artifact counts CPU-only tasks
    assert with_cpu.shapes == (TaskShape(0, 0), TaskShape(1, 1000))
    assert with_cpu.popularity.tolist() == pytest.approx([90 / 140, 50 / 140])
    with pytest.raises(ValueError, match="no GPU task"):
        TaskMix.from_shapes([TaskShape(0, 0)])


def test_cpu_only_tasks_can_use_no_free_gpu():
    m = FragmentationModel(mix((TaskShape(0, 0), 0.5), (TaskShape(1, 1000), 0.5)))
    gpu = np.array([[1000, 600]], dtype=np.int64)
    frag = m.node_fragmentation(gpu, np.array([0]), np.ones((1, 2), dtype=bool))
    assert frag[0] == pytest.approx(0.5 * 1600 + 0.5 * 600)


CLUSTER = {
    "version": 1,
    "reference_gpu": "A",
    "gpu_models": {"A": {"speed": 1.0, "memory_gb": 80}},
    "user_regions": ["r"],
    "sites": [
        {
            "name": "dc",
            "kind": "onprem",
            "provider": "onprem",
            "jurisdiction": "US",
            "region": "r",
            "uplink_gbps": 10,
            "storage_usd_per_gb_month": 0.01,
            "egress": {"internet_usd_per_gb": 0.0},
            "rtt_ms": {"r": 1},
            "pools": [
                {
                    "name": "two",
                    "gpu_model": "A",
                    "nodes": 1,
                    "gpus_per_node": 2,
                    "cpus_per_node": 32,
                    "usd_per_gpu_hour": 1.0,
                },
                {
                    "name": "four",
                    "gpu_model": "A",
                    "nodes": 1,
                    "gpus_per_node": 4,
                    "cpus_per_node": 64,
                    "usd_per_gpu_hour": 1.0,
                },
            ],
        }
    ],
}


def test_fgd_keeps_whole_pairs_where_best_fit_breaks_them():
    catalog = parse_catalog(CLUSTER)
    pools = [catalog.pool_index["dc/two"], catalog.pool_index["dc/four"]]
    pairs = FragmentationModel(mix((TaskShape(2, 1000), 1.0)))
    for choice, expected in ((NodeChoice.BEST_FIT, "two"), (NodeChoice.FGD, "four")):
        cap = CapacityState.empty(catalog)
        cap.gpu_free[pools[1]][0, 3] = 0  # the 4-GPU node has 3 whole GPUs free
        got = cap.place_on_nodes(pools, Demand(gpus=1, single_node=True), choice, frag=pairs)
        assert got is not None
        assert catalog.pools[got[0]].name == expected
    # FGD's pick leaves a 2-GPU node and 2 GPUs on the other: both pairs still fit
    assert (cap.gpu_free[pools[0]] == FULL).sum() == 2 and (cap.gpu_free[pools[1]] == FULL).sum() == 2


def test_shared_gpu_goes_to_the_slot_that_wastes_least_under_fgd():
    catalog = parse_catalog(CLUSTER)
    pools = [catalog.pool_index["dc/two"], catalog.pool_index["dc/four"]]
    whole = FragmentationModel(mix((TaskShape(1, 1000), 1.0)))
    cap = CapacityState.empty(catalog)
    cap.gpu_free[pools[1]][0, 2] = 600  # a partly used GPU: already useless to whole-GPU tasks
    pool, bindings = cap.place_on_nodes(pools, Demand(gpus=1, gpu_milli=400), NodeChoice.FGD, frag=whole)
    assert catalog.pools[pool].name == "four" and bindings[0].gpu_slots == (2,)
    assert cap.gpu_free[pools[1]][0, 2] == 200


def test_random_needs_an_rng_and_is_reproducible():
    catalog = parse_catalog(CLUSTER)
    pools = [catalog.pool_index["dc/two"], catalog.pool_index["dc/four"]]
    with pytest.raises(NodeChoiceError, match="rng"):
        CapacityState.empty(catalog).place_on_nodes(pools, Demand(gpus=1), NodeChoice.RANDOM)
    with pytest.raises(NodeChoiceError, match="FragmentationModel"):
        CapacityState.empty(catalog).place_on_nodes(pools, Demand(gpus=1), NodeChoice.FGD)

    def run(seed):
        cap = CapacityState.empty(catalog)
        rng = np.random.default_rng(seed)
        return [cap.place_on_nodes(pools, Demand(gpus=1, gpu_milli=300), NodeChoice.RANDOM, rng=rng) for _ in range(12)]

    first = run(3)
    assert first == run(3)
    assert all(x is not None for x in first[:12])  # 6 GPUs x 3 shares of 300 fit
    assert {catalog.pools[p].name for p, _ in first} == {"two", "four"}


def test_cpu_only_demand_binds_cpu_and_no_gpu():
    catalog = parse_catalog(CLUSTER)
    pools = [catalog.pool_index["dc/two"], catalog.pool_index["dc/four"]]
    cap = CapacityState.empty(catalog)
    got = cap.place_on_nodes(pools, Demand(gpus=0, gpu_milli=0, cpu_milli=40_000), NodeChoice.BEST_FIT)
    assert got is not None
    pool, (binding,) = got
    assert catalog.pools[pool].name == "four"  # only the 64-CPU node has 40 CPUs
    assert binding.gpu_slots == () and cap.cpu_free[pool][0] == 24_000
    assert cap.free_milli(pool) == 4 * FULL
    assert cap.place_on_nodes(pools, Demand(gpus=0, gpu_milli=0, cpu_milli=40_000), NodeChoice.BEST_FIT) is None


def test_best_fit_cpu_gpu_prefers_the_node_left_fullest():
    catalog = parse_catalog(CLUSTER)
    pools = [catalog.pool_index["dc/two"], catalog.pool_index["dc/four"]]
    cap = CapacityState.empty(catalog)
    got = cap.place_on_nodes(pools, Demand(gpus=1, cpu_milli=1000), NodeChoice.BEST_FIT_CPU_GPU)
    assert got is not None and catalog.pools[got[0]].name == "two"  # less CPU and fewer GPUs left there


def test_fgd_breaks_ties_toward_the_fullest_node():
    """Equal fragmentation growth: FGD takes the node BestFit would (keeps emptier nodes whole)."""
    catalog = parse_catalog(CLUSTER)
    pools = [catalog.pool_index["dc/two"], catalog.pool_index["dc/four"]]
    ones = FragmentationModel(mix((TaskShape(1, 1000), 1.0)))
    cap = CapacityState.empty(catalog)
    cap.gpu_free[pools[1]][0, :2] = 0  # the 4-GPU node has 2 GPUs left, like the 2-GPU node
    cap.cpu_free[pools[1]][0] = 10_000  # ... and less CPU left
    got = cap.place_on_nodes(pools, Demand(gpus=1, single_node=True), NodeChoice.FGD, frag=ones)
    assert got is not None and catalog.pools[got[0]].name == "four"
