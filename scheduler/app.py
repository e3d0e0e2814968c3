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
from scheduler.leader import Leader
from scheduler.service import SchedulerService
from scheduler.settings import Settings, StoreSettings
from scheduler.store.base import SchemaError, Store, StoreError

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
    leader: Leader | None = None

    def close(self) -> None:
        self.service.stop()
        for close in reversed(self.closers):
            try:
                close()
            except Exception:  # closing is best effort; report and go on
                log.exception("error while shutting down")


def make_store(url: str, catalog: Catalog, settings: StoreSettings | None = None) -> Store:
    """memory:// (this process only) or redis://host:port/db, rediss://..., unix:///path?db=N."""
    settings = settings or StoreSettings()
    if url in {"memory://", "memory"}:
        from scheduler.store.memory import MemoryStore

        return MemoryStore(catalog)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from scheduler.store.redis import RedisStore

        try:
            store = RedisStore(
                catalog,
                url,
                key_prefix=settings.key_prefix,
                event_history=settings.event_history,
                connect_timeout_s=settings.connect_timeout_s,
                command_timeout_s=settings.command_timeout_s,
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        try:
            store.check()
        except SchemaError as exc:
            store.close()
            raise ConfigError(str(exc)) from None
        except StoreError as exc:  # start anyway: calls answer UNAVAILABLE until Redis is back
            log.warning("%s; serving UNAVAILABLE until it answers", exc)
        return store
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
    store = make_store(settings.store_url, catalog, settings.store)
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
    # Every replica elects: the lease holder plans and launches, the others follow (scheduler/leader.py).
    leader = Leader(store, settings.store.lease_ttl_s)
    service = SchedulerService(
        catalog,
        store,
        executor,
        placer,
        clock,
        settings.cycle,
        epoch=leader.epoch,
        is_leader=leader.is_leader,
        governance=governance,
    )
    leader.start()
    app = App(
        settings,
        catalog,
        store,
        executor,
        service,
        closers=[executor.close, governance.close, store.close, leader.stop],
        leader=leader,
    )
    if settings.metrics_port:
        try:
            port = governance.serve_metrics(settings.metrics_port, settings.metrics_host)
        except OSError as exc:
            app.close()
            raise ConfigError(f"metrics_port {settings.metrics_port}: cannot listen: {exc}") from None
        log.info("Prometheus metrics on http://%s:%d/metrics", settings.metrics_host, port)
    return app
