"""Fixed-window rate limits shared by every worker and replica.

A counter per key and window in the cache: Redis on the production path
(one INCR and EXPIRE in a pipeline, one round trip), the local-memory cache
on the embedded default. Written here because the libraries for this
(django-ratelimit and friends) decorate views with one rule each and need
two cache round trips per rule; the beacon endpoint checks two limits on
every request and must stay fast: one pipeline counts them all.
"""

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache, caches
from django_redis import get_redis_connection
from django_redis.cache import RedisCache

logger = logging.getLogger(__name__)


# Limit, Verdict and Window are made for every beacon: slots rather than
# frozen, whose __init__ sets each field through object.__setattr__ (as
# apps.vitals.collect.BeaconRequest).
@dataclass(slots=True)
class Limit:
    scope: str  # e.g. "vitals-ip"
    identity: str  # who is counted: a client address, a site id
    per_window: int


@dataclass(slots=True)
class Verdict:
    refused: Limit | None  # the first limit exceeded, None when allowed
    retry_after: int  # seconds until the window resets

    @property
    def allowed(self) -> bool:
        return self.refused is None


def _redis_client() -> Any:
    """The raw Redis client behind the cache, or None on the embedded
    default's local-memory cache."""
    if not isinstance(caches["default"], RedisCache):
        return None
    return get_redis_connection("default")


@dataclass(slots=True)
class Window:
    """The counters of some limits in the current fixed window."""

    limits: Sequence[Limit]
    keys: list[str]
    seconds: int
    retry_after: int  # seconds until the window resets

    def verdict(self, counts: Sequence[int]) -> Verdict:
        """The verdict on one request, from its limits' counts after it."""
        for limit, count in zip(self.limits, counts, strict=True):
            if count > limit.per_window:
                return Verdict(limit, self.retry_after)
        return Verdict(None, self.retry_after)


def current_window(limits: Sequence[Limit], *, window: int) -> Window:
    """The counters to increment for a request now, ``window`` seconds
    long. A counter lives a second longer than its window, so that one
    incremented at its very end is still there when compared."""
    now = time.time()
    window_start = int(now // window) * window
    retry_after = max(1, int(window_start + window - now))
    keys = [f"perfhub:rl:{limit.scope}:{limit.identity}:{window_start}" for limit in limits]
    return Window(limits, keys, window, retry_after)


def hit(limits: Sequence[Limit], *, window: int) -> Verdict:
    """Count one request against every limit (per ``window`` seconds), in
    one Redis round trip for all of them. Fails open: when the cache is down,
    requests are allowed (and the failure logged), because losing beacons is
    worse than a burst."""
    counters = current_window(limits, window=window)
    try:
        client = _redis_client()
        if client is not None:
            pipe = client.pipeline(transaction=False)
            for key in counters.keys:
                pipe.incr(key)
                pipe.expire(key, window + 1, nx=True)
            counts = [int(count) for count in pipe.execute()[::2]]
        else:
            counts = []
            for key in counters.keys:
                cache.add(key, 0, timeout=window + 1)
                counts.append(cache.incr(key))
    except Exception:
        logger.warning("rate limits not checked: cache unavailable", exc_info=True)
        return Verdict(None, 0)
    return counters.verdict(counts)
