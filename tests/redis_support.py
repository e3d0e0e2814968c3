"""Redis for tests: the database named by GRAVITY_TEST_REDIS_URL (default db 15), flushed per test.

Tests that need Redis are marked `redis` and FAIL when it cannot be reached: a CI without Redis
must not pass by skipping them.
"""

from __future__ import annotations

import os

import pytest
import redis

REDIS_URL = os.environ.get("GRAVITY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def fresh_redis(url: str = REDIS_URL) -> redis.Redis:
    """A client on the test database, emptied (FLUSHDB: that database only). Fails the test if unreachable."""
    client = redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=2, socket_timeout=10)
    try:
        client.flushdb()
    except redis.RedisError as exc:
        pytest.fail(
            f"Redis at {url} is unreachable ({exc}); tests marked `redis` need it "
            "(start redis-server or set GRAVITY_TEST_REDIS_URL)",
            pytrace=False,
        )
    return client
