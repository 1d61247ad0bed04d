"""Cache backends that count their time towards the request's Server-Timing.

django-prometheus already wraps the backends to count hits and misses; these
subclasses add the per-request timing that no library provides: every public
cache method is timed into the request ledger (see apps.metrics.timing).
"""

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from django_prometheus.cache.backends.locmem import LocMemCache as PrometheusLocMemCache
from django_prometheus.cache.backends.redis import RedisCache as PrometheusRedisCache

from apps.metrics.timing import timed_cache_call

_TIMED_METHODS = (
    "add",
    "get",
    "set",
    "touch",
    "delete",
    "get_many",
    "get_or_set",
    "has_key",
    "incr",
    "decr",
    "set_many",
    "delete_many",
    "clear",
)

C = TypeVar("C", bound=type)


def _timed(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with timed_cache_call():
            return method(*args, **kwargs)

    return wrapper


def _time_public_methods(cls: C) -> C:
    for name in _TIMED_METHODS:
        setattr(cls, name, _timed(getattr(cls, name)))
    return cls


@_time_public_methods
class RedisCache(PrometheusRedisCache):
    pass


@_time_public_methods
class LocMemCache(PrometheusLocMemCache):
    pass
