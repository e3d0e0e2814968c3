"""Integration fixtures. One embedded Ray cluster per test session, shared by every test that
asks for `ray_cluster` (started on first use, ~5 s; stopped at the end of the session).

The cluster is the one `RayExecutor.from_settings` starts when no address is configured: a
`site:<name>` resource per catalog site, sized to the site's GPU total, and that many logical
GPUs in all. It runs in its own temp dir on free ports, so concurrent sessions do not collide.
Build executors on it with `ray_executor(...)`; each is closed after its test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from placers.catalog import Catalog, load_catalog
from scheduler.executors.ray_jobs import ClusterTarget, RayExecutor, start_embedded
from scheduler.executors.ray_local import LocalRayCluster
from scheduler.settings import ExecutorSettings


@pytest.fixture(scope="session")
def ray_catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="session")
def ray_cluster(ray_catalog: Catalog) -> Iterator[LocalRayCluster]:
    cluster = start_embedded(ExecutorSettings(), ray_catalog, [s.name for s in ray_catalog.sites])
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def ray_executor(ray_cluster: LocalRayCluster, ray_catalog: Catalog) -> Iterator[Callable[..., RayExecutor]]:
    """A factory: ray_executor(poll_s=0.1, log_tail_lines=5) -> a RayExecutor on the shared cluster."""
    made: list[RayExecutor] = []

    def make(**settings: Any) -> RayExecutor:
        settings.setdefault("poll_s", 0.1)
        target = ClusterTarget(ray_cluster.address, ray_cluster.headers)
        executor = RayExecutor(ray_catalog, dict.fromkeys(ray_catalog.site_index, target), ExecutorSettings(**settings))
        made.append(executor)
        return executor

    yield make
    for executor in made:
        executor.close()
