"""Fixtures shared by the contract suites."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from placers.catalog import Catalog
from scheduler.store.base import Store
from scheduler.store.memory import MemoryStore
from scheduler.store.redis import RedisStore
from tests.redis_support import REDIS_URL, fresh_redis


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest, catalog: Catalog) -> Iterator[Store]:
    """Each store implementation, empty (Redis: a flushed test database; fails without Redis)."""
    if request.param == "memory":
        s: Store = MemoryStore(catalog)
    else:
        fresh_redis().close()
        s = RedisStore(catalog, REDIS_URL)
    yield s
    s.close()
