"""Integration fixtures: real local Ray clusters, started once per test session and shared.

`site_clusters` (started on first use, in parallel, ~20-40 s on a small machine; stopped at the
end of the session) gives two sites two separate Ray clusters, as in production:

* onprem-sjc: a head started exactly as Gravity starts its embedded cluster for that one site
  (`start_embedded`): 4 logical GPUs, `site:onprem-sjc` and a `pool:onprem-sjc/<pool>` per pool;
* onprem-fra: a head with 4 logical GPUs and a second node (`ray start --address`) with 2, so
  gangs can span or miss nodes. Head: site:onprem-fra 3, pool a100 3, pool l40s-inference 1
  (dedicated); node: site:onprem-fra 1, pool a100 1, pool l40s-inference 1.

Every cluster runs in its own temp dir on free ports with its own auth token, so concurrent
sessions do not collide. Build executors on them with `ray_executor(...)`; each is closed after
its test. Tests use their own job ids, so they do not see each other's work.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from placers.catalog import Catalog, load_catalog
from scheduler.executors.ray_jobs import ClusterTarget, RayExecutor, start_embedded
from scheduler.executors.ray_local import LocalRayCluster, LocalRayNode, pool_resource, site_resource
from scheduler.settings import ExecutorSettings

SJC, FRA = "onprem-sjc", "onprem-fra"
FRA_HEAD = {site_resource(FRA): 3.0, pool_resource(FRA, "a100"): 3.0, pool_resource(FRA, "l40s-inference"): 1.0}
FRA_NODE = {site_resource(FRA): 1.0, pool_resource(FRA, "a100"): 1.0, pool_resource(FRA, "l40s-inference"): 1.0}

#: Settings every test executor starts from (fast polling; gangs give up quickly).
TEST_SETTINGS: dict[str, Any] = {"poll_s": 0.1, "health_poll_s": 0.3, "gang_ready_timeout_s": 30.0}


@dataclass
class SiteClusters:
    sjc: LocalRayCluster
    fra: LocalRayCluster
    fra_node: LocalRayNode

    def cluster(self, site: str) -> LocalRayCluster:
        return {SJC: self.sjc, FRA: self.fra}[site]

    def target(self, site: str) -> ClusterTarget:
        c = self.cluster(site)
        # sjc is a logical stand-in (like the embedded cluster); fra accounts CPUs and memory too.
        return ClusterTarget(c.address, c.headers, python=sys.executable, cpu_memory=site == FRA)

    def targets(self) -> dict[str, ClusterTarget]:
        return {SJC: self.target(SJC), FRA: self.target(FRA)}


@pytest.fixture(scope="session")
def ray_catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="session")
def site_clusters(ray_catalog: Catalog) -> Iterator[SiteClusters]:
    # Both heads start at once (from this thread: a child dies with the thread that started it).
    sjc = start_embedded(ExecutorSettings(local_gpus=4), ray_catalog, [SJC], wait=False)
    fra: LocalRayCluster | None = None
    node: LocalRayNode | None = None
    try:
        fra = LocalRayCluster.start(gpus=4, resources=FRA_HEAD, num_cpus=4, wait=False)
        sjc.wait_ready()
        fra.wait_ready()
        node = fra.add_node(gpus=2, resources=FRA_NODE, num_cpus=2)
        yield SiteClusters(sjc, fra, node)
    finally:
        for closable in (node, fra, sjc):
            if closable is not None:
                closable.close()


@pytest.fixture
def ray_executor(site_clusters: SiteClusters, ray_catalog: Catalog) -> Iterator[Callable[..., RayExecutor]]:
    """A factory: ray_executor(targets=None, **settings) -> a RayExecutor on the session's clusters
    (onprem-sjc and onprem-fra by default; every other site has no cluster and is unavailable)."""
    made: list[RayExecutor] = []

    def make(targets: dict[str, ClusterTarget] | None = None, **settings: Any) -> RayExecutor:
        executor = RayExecutor(
            ray_catalog,
            targets if targets is not None else site_clusters.targets(),
            ExecutorSettings(**{**TEST_SETTINGS, **settings}),
        )
        made.append(executor)
        return executor

    yield make
    for executor in made:
        executor.close()
