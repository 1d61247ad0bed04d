"""PerfHub's own cache lookups, counted per key prefix by the instrumented
backends, on whichever cache this run uses (Redis or local memory)."""

import pytest
from django.core.cache import cache, caches
from django.core.cache.backends.locmem import LocMemCache
from django.test import override_settings

from apps.cache.selectors import prefix_counts
from apps.metrics.cache_backends import key_prefix
from tests.cache.conftest import redis_cache_settings
from tests.helpers import free_port


def _counts(backend: str, prefix: str) -> tuple[int, int, int]:
    for row in prefix_counts():
        if (row.backend, row.prefix) == (backend, prefix):
            return row.hits, row.misses, row.errors
    return 0, 0, 0


def _backend() -> str:
    return "locmem" if isinstance(caches["default"], LocMemCache) else "redis"


@pytest.mark.parametrize(
    ("key", "prefix"),
    [
        ("perfhub:vitals:site:phk_abc", "perfhub:vitals"),
        ("perfhub:worker:heartbeat", "perfhub:worker"),
        ("vitals:rum-snippet", "vitals:rum-snippet"),
        ("perfhub:cache:response:0123", "perfhub:cache"),
        ("django.contrib.sessions.cached_db4k2j3h4", "sessions"),
        ("perfhub:unknown-kind:1", "other"),
        ("user:42:profile", "other"),
        ("plainkey", "other"),
    ],
)
def test_the_prefix_is_the_key_up_to_its_second_colon_if_known(key: str, prefix: str) -> None:
    assert key_prefix(key) == prefix


def test_get_and_get_many_count_each_key_per_prefix() -> None:
    backend = _backend()
    before = _counts(backend, "perfhub:vitals")
    before_other = _counts(backend, "other")
    cache.set_many({f"perfhub:vitals:site:k{n}": n for n in range(4)})

    for n in range(7):
        assert cache.get(f"perfhub:vitals:site:k{n % 4}") == n % 4
    for n in range(3):
        assert cache.get(f"perfhub:vitals:site:missing{n}") is None
    found = cache.get_many(
        ["perfhub:vitals:site:k0", "perfhub:vitals:site:k1", "perfhub:vitals:site:gone", "perfhub:vitals:site:x"]
    )
    assert found == {"perfhub:vitals:site:k0": 0, "perfhub:vitals:site:k1": 1}
    cache.get("some:random:key")

    hits, misses, errors = _counts(backend, "perfhub:vitals")
    assert (hits - before[0], misses - before[1], errors - before[2]) == (9, 5, 0)
    assert _counts(backend, "other")[1] == before_other[1] + 1


def test_get_or_set_counts_through_get() -> None:
    backend = _backend()
    before = _counts(backend, "perfhub:worker")
    assert cache.get_or_set("perfhub:worker:x", "computed") == "computed"
    assert cache.get_or_set("perfhub:worker:x", "other") == "computed"
    hits, misses, _ = _counts(backend, "perfhub:worker")
    # Django's get_or_set reads again after its add (another caller may have
    # won the race): a miss and a hit, then a hit.
    assert (hits - before[0], misses - before[1]) == (2, 1)


@pytest.mark.parametrize("value", [0, "", {}, [], False])
def test_falsy_values_come_back_as_stored(value: object) -> None:
    # django-prometheus' local-memory get returns `cached or default`.
    cache.set("perfhub:vitals:falsy", value)
    assert cache.get("perfhub:vitals:falsy", "default") == value


def test_an_unreachable_redis_counts_errors_and_raises() -> None:
    before = _counts("redis", "perfhub:probe")
    with override_settings(CACHES=redis_cache_settings(f"redis://127.0.0.1:{free_port()}/0")):
        with pytest.raises(Exception, match="Error|refused"):
            cache.get("perfhub:probe:1")
        with pytest.raises(Exception, match="Error|refused"):
            cache.get_many(["perfhub:probe:2", "perfhub:probe:3"])
    assert _counts("redis", "perfhub:probe")[2] == before[2] + 3
