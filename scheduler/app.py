"""Wiring: settings in, a running scheduler out. The one place that picks implementations."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from placers.catalog import Catalog, load_catalog
from placers.registry import make_placer
from scheduler.clock import Clock, WallClock
from scheduler.executors.base import Executor
from scheduler.finops.governance import Governance
from scheduler.service import SchedulerService
from scheduler.settings import Settings
from scheduler.store.base import Store

log = logging.getLogger("gravity")


class ConfigError(ValueError):
    """Settings that cannot produce a working scheduler (bad catalog, unknown placer, bad URL)."""


@dataclass
class App:
    settings: Settings
    catalog: Catalog
    store: Store
    executor: Executor
    service: SchedulerService
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        self.service.stop()
        for close in reversed(self.closers):
            try:
                close()
            except Exception:  # closing is best effort; report and go on
                log.exception("error while shutting down")


def make_store(url: str, catalog: Catalog) -> Store:
    if url in {"memory://", "memory"}:
        from scheduler.store.memory import MemoryStore

        return MemoryStore(catalog)
    if url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"store_url {url!r}: the Redis store is not available in this build yet")
    raise ConfigError(f"store_url {url!r}: expected memory:// or redis://host:port/db")


def make_executor(settings: Settings, catalog: Catalog, clock: Clock) -> Executor:
    ex = settings.executor
    if ex.kind == "sim":
        from scheduler.executors.sim import SimExecutor

        return SimExecutor(clock, catalog, speedup=ex.sim_speedup)
    from scheduler.executors.ray_jobs import RayExecutor

    return RayExecutor.from_settings(ex, catalog)


def build_app(settings: Settings, clock: Clock | None = None) -> App:
    clock = clock or WallClock()
    try:
        catalog = load_catalog(settings.catalog)
        placer = make_placer(settings.placer)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    store = make_store(settings.store_url, catalog)
    try:
        governance = Governance(
            store,
            catalog,
            clock,
            settings.finops,
            service_horizon_s=settings.cycle.service_horizon_s,
            budgets_usd=settings.budgets_usd,
            budget_tag=settings.budget_tag,
        )
    except ValueError as exc:  # a budget or webhook URL in the settings that cannot work
        store.close()
        raise ConfigError(str(exc)) from None
    executor = make_executor(settings, catalog, clock)
    service = SchedulerService(catalog, store, executor, placer, clock, settings.cycle, governance=governance)
    app = App(settings, catalog, store, executor, service, closers=[executor.close, governance.close, store.close])
    if settings.metrics_port:
        try:
            port = governance.serve_metrics(settings.metrics_port, settings.metrics_host)
        except OSError as exc:
            app.close()
            raise ConfigError(f"metrics_port {settings.metrics_port}: cannot listen: {exc}") from None
        log.info("Prometheus metrics on http://%s:%d/metrics", settings.metrics_host, port)
    return app
