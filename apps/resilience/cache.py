"""The Redis cache behind the ``redis-cache`` circuit breaker.

DESIGN.md, Degradation: when Redis is down the cache is bypassed. Every
cache operation goes through the breaker; when it fails, or the breaker is
open, reads miss and writes are dropped, so pages are rendered from the
database instead of failing. django-redis' own ``IGNORE_EXCEPTIONS`` would
swallow the errors too, but it would still wait for a socket timeout on
every call while Redis hangs; the open breaker answers at once.

``incr``/``decr``/``clear`` are not guarded: they have no sensible fallback
value, and their callers handle the error (see apps/core/ratelimit.py).
"""

import logging
from collections.abc import Callable
from typing import Any

import pybreaker
from django_redis.cache import RedisCache as DjangoRedisCache

from apps.metrics.cache_backends import RedisCache as InstrumentedRedisCache
from apps.resilience.breakers import breaker, forget_local_state

logger = logging.getLogger(__name__)


class ResilientCacheMixin:
    def _guarded(self, method: Callable[..., Any], fallback: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return breaker("redis-cache").call(method, *args, **kwargs)
        except pybreaker.CircuitBreakerError:
            return fallback
        except (ValueError, TypeError):
            raise  # a caller's mistake (e.g. an unpicklable value), not Redis failing
        except Exception as exc:
            logger.warning("cache bypassed: %s: %s", type(exc).__name__, exc)
            return fallback

    def unguarded(self) -> Any:
        """The backend without the breaker: health checks want the real error."""
        return super()

    def get(self, key: Any, default: Any = None, version: int | None = None, **kwargs: Any) -> Any:
        return self._guarded(super().get, default, key, default, version, **kwargs)  # type: ignore[misc]

    def get_many(self, keys: Any, version: int | None = None, **kwargs: Any) -> Any:
        return self._guarded(super().get_many, {}, keys, version=version, **kwargs)  # type: ignore[misc]

    def has_key(self, key: Any, version: int | None = None, **kwargs: Any) -> Any:
        return self._guarded(super().has_key, False, key, version=version, **kwargs)  # type: ignore[misc]

    def set(self, *args: Any, **kwargs: Any) -> Any:
        return self._guarded(super().set, False, *args, **kwargs)  # type: ignore[misc]

    def add(self, *args: Any, **kwargs: Any) -> Any:
        return self._guarded(super().add, False, *args, **kwargs)  # type: ignore[misc]

    def touch(self, *args: Any, **kwargs: Any) -> Any:
        return self._guarded(super().touch, False, *args, **kwargs)  # type: ignore[misc]

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        return self._guarded(super().delete, False, *args, **kwargs)  # type: ignore[misc]

    def set_many(self, data: Any, *args: Any, **kwargs: Any) -> Any:
        return self._guarded(super().set_many, list(data), data, *args, **kwargs)  # type: ignore[misc]

    def delete_many(self, *args: Any, **kwargs: Any) -> Any:
        return self._guarded(super().delete_many, None, *args, **kwargs)  # type: ignore[misc]

    def clear(self) -> Any:
        # FLUSHDB also empties the shared breaker state when it lives in the
        # same Redis database: this process's copy must not outlive it.
        try:
            return super().clear()  # type: ignore[misc]
        finally:
            forget_local_state()


class ResilientRedisCache(ResilientCacheMixin, InstrumentedRedisCache):
    pass


class PlainResilientRedisCache(ResilientCacheMixin, DjangoRedisCache):
    """For PERFHUB_INSTRUMENT=False (the overhead benchmark's baseline)."""
