"""Shared fixtures: the default catalog, a manual clock, services wired with the sim executor."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from placers.catalog import Catalog, load_catalog
from placers.domain import JobKind, JobSpec
from placers.registry import make_placer
from scheduler.clock import ManualClock
from scheduler.executors.sim import SimExecutor
from scheduler.service import SchedulerService
from scheduler.settings import CycleSettings
from scheduler.store.memory import MemoryStore


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def spec(**kw: object) -> JobSpec:
    """A valid training JobSpec; override any field."""
    base: dict[str, object] = {
        "name": "job",
        "kind": JobKind.TRAINING,
        "gpus": 1,
        "entrypoint": "python train.py",
        "runtime_s": 3600.0,
    }
    base.update(kw)
    return JobSpec(**base)  # type: ignore[arg-type]


@pytest.fixture
def make_service(catalog: Catalog, clock: ManualClock) -> Callable[..., SchedulerService]:
    def make(placer: str = "greedy", **kw: object) -> SchedulerService:
        store = MemoryStore(catalog)
        executor = SimExecutor(clock, catalog)
        return SchedulerService(catalog, store, executor, make_placer(placer), clock, CycleSettings(), **kw)  # type: ignore[arg-type]

    return make
