"""The leader lease as a replica sees it (scheduler/leader.py), on the memory store's lease."""

from __future__ import annotations

import time

from placers.catalog import Catalog
from scheduler.leader import LOCAL_SHARE, Leader
from scheduler.store.base import StoreError
from scheduler.store.memory import MemoryStore


def test_one_leader_at_a_time_and_clean_handover(catalog: Catalog) -> None:
    store = MemoryStore(catalog)
    a, b = Leader(store, 5.0, holder="a"), Leader(store, 5.0, holder="b")
    assert a.renew() == 1 and a.is_leader() and a.epoch() == 1
    assert b.renew() == 0 and not b.is_leader() and b.epoch() == 0
    assert a.renew() == 1  # renewing keeps the epoch
    a.stop()  # releases: b need not wait for the ttl
    assert not a.is_leader()
    assert b.renew() == 2 and b.is_leader()


def test_a_replica_stops_acting_before_the_store_lets_its_lease_go(catalog: Catalog) -> None:
    store = MemoryStore(catalog)
    ttl = 0.5
    a, b = Leader(store, ttl, holder="a"), Leader(store, ttl, holder="b")
    a.renew()
    time.sleep(ttl * LOCAL_SHARE + 0.05)  # a was paused: past its local share, within the store's ttl
    assert a.epoch() == 0  # a no longer acts ...
    assert b.renew() == 0  # ... and nobody else may yet: never two leaders
    time.sleep(ttl * (1 - LOCAL_SHARE) + 0.05)
    assert b.renew() == 2 and a.epoch() == 0
    assert a.renew() == 0  # a, resumed, finds it follows


class FlakyStore(MemoryStore):
    down = False

    def acquire_lease(self, holder: str, ttl_s: float) -> int:
        if self.down:
            raise StoreError("Redis unavailable")
        return super().acquire_lease(holder, ttl_s)


def test_an_unreachable_store_lets_the_lease_lapse(catalog: Catalog) -> None:
    store = FlakyStore(catalog)
    a = Leader(store, 0.4, holder="a")
    assert a.renew() == 1
    store.down = True
    assert a.renew() == 1  # still within its lease
    time.sleep(0.4 * LOCAL_SHARE + 0.05)
    assert a.renew() == 0 and not a.is_leader()
    store.down = False
    time.sleep(0.1)
    assert a.renew() == 2  # the lease expired meanwhile: a new epoch
