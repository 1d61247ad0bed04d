"""Fixed-window rate limits shared by every worker and replica.

A counter per key and window in the cache: Redis on the production path
(one INCR and EXPIRE in a pipeline, one round trip), the local-memory cache
on the embedded default. Written here because the libraries for this
(django-ratelimit and friends) decorate views with one rule each and need
two cache round trips per rule; the beacon endpoint checks two limits on
every request and must stay fast.
"""

import logging
import time
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache, caches
from django_redis import get_redis_connection
from django_redis.cache import RedisCache

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: int  # seconds until the window resets, when refused


def _redis_client() -> Any:
    """The raw Redis client behind the cache, or None on the embedded
    default's local-memory cache."""
    if not isinstance(caches["default"], RedisCache):
        return None
    return get_redis_connection("default")


def hit(scope: str, identity: str, *, limit: int, window: int) -> Verdict:
    """Count one request of ``identity`` against ``limit`` per ``window``
    seconds. Fails open: when the cache is down, requests are allowed (and
    the failure logged), because losing beacons is worse than a burst."""
    now = time.time()
    window_start = int(now // window) * window
    retry_after = max(1, int(window_start + window - now))
    key = f"perfhub:rl:{scope}:{identity}:{window_start}"
    try:
        client = _redis_client()
        if client is not None:
            pipe = client.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, window + 1, nx=True)
            count = int(pipe.execute()[0])
        else:
            cache.add(key, 0, timeout=window + 1)
            count = cache.incr(key)
    except Exception:
        logger.warning("rate limit %s not checked: cache unavailable", scope, exc_info=True)
        return Verdict(True, 0)
    return Verdict(count <= limit, retry_after)
