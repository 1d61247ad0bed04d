"""Redis statistics over a window, from INFO snapshot deltas, checked on a
private redis-server whose every hit and miss the test makes itself."""

import io
import time

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.test import Client
from prometheus_client import REGISTRY

from apps.cache.selectors import cache_stats
from apps.cache.services import info_snapshot_take
from tests.cache.conftest import PrivateRedis

pytestmark = pytest.mark.django_db


def _make_hits_and_misses() -> None:
    """7 hits and 3 misses with get, 2 and 2 with get_many."""
    cache.set_many({"perfhub:vitals:site:a": 1, "perfhub:vitals:site:b": 2})
    for n in range(7):
        cache.get("perfhub:vitals:site:a" if n % 2 else "perfhub:vitals:site:b")
    for n in range(3):
        cache.get(f"perfhub:vitals:site:missing{n}")
    cache.get_many(["perfhub:vitals:site:a", "perfhub:vitals:site:b", "perfhub:vitals:site:c", "perfhub:vitals:d"])


def test_the_hit_rate_is_the_delta_over_the_window(private_redis: PrivateRedis) -> None:
    # A snapshot that starts a one-minute window 90 s ago, as a reader or
    # the cache_snapshot command would have left it.
    assert info_snapshot_take(at=time.time() - 90) is not None
    _make_hits_and_misses()

    stats = cache_stats(window="1m")

    assert stats.backend == "redis" and stats.redis_error is None
    redis = stats.redis
    assert redis is not None
    assert (redis.hits, redis.misses) == (9, 5)
    assert redis.hit_rate == round(9 / 14, 4)
    assert redis.collecting is False
    assert 89 <= redis.covered_seconds <= 95
    assert redis.evicted_keys == 0
    # set_many (MULTI: SET, EXPIRE…), 10 GETs, 1 MGET and the snapshot's own
    # commands: at least a dozen, at most a few dozen.
    assert redis.commands is not None and 12 <= redis.commands <= 40
    assert redis.ops_per_second == pytest.approx(redis.commands / redis.covered_seconds, rel=0.05)
    assert redis.memory_used_bytes > 0 and redis.memory_peak_bytes >= redis.memory_used_bytes
    assert redis.connected_clients >= 1
    assert [(row.db, row.keys) for row in redis.keyspace] == [(0, 3)]  # two keys and the snapshots

    assert REGISTRY.get_sample_value("perfhub_redis_hit_ratio", {"window": "1m"}) == redis.hit_rate
    assert REGISTRY.get_sample_value("perfhub_redis_memory_used_bytes") == redis.memory_used_bytes


def test_a_later_window_excludes_what_happened_before_it(private_redis: PrivateRedis) -> None:
    now = time.time()
    info_snapshot_take(at=now - 400)
    _make_hits_and_misses()
    info_snapshot_take(at=now - 70)
    cache.get("perfhub:vitals:site:a")
    cache.get("perfhub:vitals:site:nothing")

    one_minute = cache_stats(window="1m").redis
    five_minutes = cache_stats(window="5m").redis

    assert one_minute is not None and five_minutes is not None
    assert (one_minute.hits, one_minute.misses) == (1, 1)
    # The newest snapshot at least five minutes old is the 400 s one; the
    # one-minute reading's own read of the snapshots is one more hit.
    assert (five_minutes.hits, five_minutes.misses) == (9 + 1 + 1, 5 + 1)


def test_a_fresh_window_says_it_is_collecting(private_redis: PrivateRedis) -> None:
    first = cache_stats(window="5m").redis
    assert first is not None
    assert first.collecting is True
    assert first.hits is None and first.hit_rate is None and first.ops_per_second is None

    # The first read stored a snapshot; a read 20 s later measures from it.
    cache.get("perfhub:vitals:site:none")
    later = cache_stats(window="5m", now=time.time() + 20).redis
    assert later is not None
    assert later.collecting is True
    assert 19 <= later.covered_seconds <= 25
    assert later.window_start == first.window_start
    # Ours, and the first reading's look at the snapshots (none yet: a miss).
    assert later.misses == 2


def test_the_stats_page_and_api_show_the_window(private_redis: PrivateRedis, viewer_client: Client) -> None:
    info_snapshot_take(at=time.time() - 90)
    _make_hits_and_misses()

    body = viewer_client.get("/api/v1/performance/cache/stats?window=1m").json()
    assert body["backend"] == "redis"
    # Plus the request's own lookups before the statistics are read: its
    # session (a hit) and its response cache entry (a miss).
    assert (body["redis"]["hits"], body["redis"]["misses"]) == (9 + 1, 5 + 1)
    assert body["redis"]["collecting"] is False

    html = viewer_client.get("/cache/?window=5m").content.decode()
    assert "Collecting: the 5m window starts at" in html


def test_redis_down_still_answers(private_redis: PrivateRedis, read_token: str) -> None:
    client = Client(HTTP_AUTHORIZATION=f"Bearer {read_token}")
    assert client.get("/api/v1/performance/cache/stats").status_code == 200
    private_redis.stop()

    response = client.get("/api/v1/performance/cache/stats")

    assert response.status_code == 200
    assert response["X-PerfHub-Cache"] == "error"
    body = response.json()
    assert body["redis"] is None
    assert body["redis_error"].startswith("Redis is unreachable")


def test_the_snapshot_command_starts_windows(private_redis: PrivateRedis) -> None:
    out = io.StringIO()
    call_command("cache_snapshot", stdout=out)
    assert "stored" in out.getvalue()
    _make_hits_and_misses()
    redis = cache_stats(window="5m", now=time.time() + 30).redis
    assert redis is not None
    assert redis.collecting is True and 29 <= redis.covered_seconds <= 35
    assert (redis.hits, redis.misses) == (9, 5)
