from __future__ import annotations

from placers.capacity import FULL, CapacityState, Demand, NodeChoice


def pool(catalog, key):
    return catalog.pool_index[key]


def test_gang_is_bound_to_one_node_best_fit(catalog):
    cap = CapacityState.empty(catalog)
    p = pool(catalog, "onprem-sjc/h100")  # 16 nodes x 8
    first = cap.place(p, Demand(gpus=6, single_node=True))
    assert first is not None and len(first) == 1 and len(first[0].gpu_slots) == 6
    # best fit puts a 2-GPU gang in the 2 GPUs left on the same node, keeping whole nodes free
    second = cap.place(p, Demand(gpus=2, single_node=True))
    assert second is not None and second[0].node == first[0].node
    assert cap.free_gpus(p) == 16 * 8 - 8
    assert cap.max_whole_gpus_on_a_node(p) == 8


def test_gang_larger_than_free_on_any_node_does_not_fit_even_if_total_does(catalog):
    cap = CapacityState.empty(catalog)
    p = pool(catalog, "onprem-fra/l40s-inference")  # 6 nodes x 4
    for _ in range(6):
        assert cap.place(p, Demand(gpus=3, single_node=True)) is not None
    assert cap.free_gpus(p) == 6  # one GPU free on each node
    assert cap.find(p, Demand(gpus=2, single_node=True)) is None
    spread = cap.find(p, Demand(gpus=2, single_node=False))
    assert spread is not None and len(spread) == 2


def test_release_restores_exactly(catalog):
    cap = CapacityState.empty(catalog)
    p = pool(catalog, "onprem-sjc/a100")
    before = cap.gpu_free[p].copy()
    d = Demand(gpus=12, single_node=False, cpu_milli=24_000, memory_mib=1000)
    b = cap.place(p, d)
    assert b is not None and sum(len(x.gpu_slots) for x in b) == 12
    cap.release(p, d, b)
    assert (cap.gpu_free[p] == before).all()


def test_fractional_gpus_share_a_slot(catalog):
    cap = CapacityState.empty(catalog)
    p = pool(catalog, "onprem-sjc/a100")
    a = cap.place(p, Demand(gpus=1, gpu_milli=300, single_node=True))
    b = cap.place(p, Demand(gpus=1, gpu_milli=500, single_node=True))
    assert a and b and (a[0].node, a[0].gpu_slots) == (b[0].node, b[0].gpu_slots)
    assert cap.gpu_free[p][a[0].node, a[0].gpu_slots[0]] == FULL - 800
    # a whole GPU does not go to the shared slot
    c = cap.place(p, Demand(gpus=1, single_node=True))
    assert c and (c[0].node, c[0].gpu_slots) != (a[0].node, a[0].gpu_slots)


def test_elastic_pool_bounded_by_pool_and_site_quota(catalog):
    cap = CapacityState.empty(catalog)
    p5 = pool(catalog, "aws-us-east-1/p5")  # 256 of the site's 512
    p4 = pool(catalog, "aws-us-east-1/p4de")  # 256
    g6 = pool(catalog, "aws-us-east-1/g6e")
    assert cap.place(p5, Demand(gpus=8, replicas=32)) == ()
    assert cap.find(p5, Demand(gpus=1)) is None  # pool quota used up
    assert cap.place(p4, Demand(gpus=8, replicas=32)) == ()
    assert cap.find(g6, Demand(gpus=1)) is None  # site burst quota used up
    assert cap.find(p4, Demand(gpus=16, single_node=True)) is None


def test_replicas_spread_over_distinct_nodes(catalog):
    cap = CapacityState.empty(catalog)
    p = pool(catalog, "onprem-fra/l40s-inference")
    b = cap.place(p, Demand(gpus=1, replicas=3, spread=True, single_node=True))
    assert b is not None and len({x.node for x in b}) == 3
    packed = cap.place(p, Demand(gpus=1, replicas=3, single_node=True))
    assert packed is not None and len({x.node for x in packed}) == 1  # best fit packs


def test_multi_replica_is_all_or_nothing(catalog):
    cap = CapacityState.empty(catalog)
    p = pool(catalog, "onprem-fra/l40s-inference")  # 6 nodes
    assert cap.find(p, Demand(gpus=1, replicas=7, spread=True, single_node=True)) is None
    assert cap.free_gpus(p) == 24


def test_node_choice_policies(catalog):
    cap = CapacityState.empty(catalog)
    p = pool(catalog, "onprem-fra/a100")
    cap.place(p, Demand(gpus=4, single_node=True))  # node 0 has 4 left
    best = cap.find(p, Demand(gpus=2, single_node=True), NodeChoice.BEST_FIT)
    worst = cap.find(p, Demand(gpus=2, single_node=True), NodeChoice.WORST_FIT)
    assert best and worst and best[0].node == 0 and worst[0].node != 0
