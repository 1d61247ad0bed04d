"""Fixed-window rate limits shared by every worker and replica.

A counter per key and window in the cache: Redis on the production path
(one INCR and EXPIRE in a pipeline, one round trip), the local-memory cache
on the embedded default. Written here because the libraries for this
(django-ratelimit and friends) decorate views with one rule each and need
two cache round trips per rule; the beacon endpoint checks two limits on
every request and must stay fast: one pipeline counts them all, and the
beacon stream's appends count most beacons in process (LocalCounts).
"""

import logging
import math
import threading
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
    start: int  # the window's first second, in epoch seconds

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
    return Window(limits, keys, window, retry_after, window_start)


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
            local_counts.learned(counters.start, dict(zip(counters.keys, counts, strict=True)))
        else:
            counts = []
            for key in counters.keys:
                cache.add(key, 0, timeout=window + 1)
                counts.append(cache.incr(key))
    except Exception:
        logger.warning("rate limits not checked: cache unavailable", exc_info=True)
        return Verdict(None, 0)
    return counters.verdict(counts)


@dataclass(slots=True)
class Claim:
    """How one request is to be counted (LocalCounts.claim): refused at
    once; counted in Redis with its append (``exact``: the amounts to add to
    the window's counters), perhaps with the other counts this process has
    gathered (``flush``); or, with neither, counted here already."""

    refused: Limit | None = None
    exact: list[int] | None = None
    flush: dict[str, int] | None = None


class LocalCounts:
    """This process's view of the current window's counters in Redis.

    Counting every beacon in Redis took a Lua script around the beacon's
    append: bench/ingest.py served 10% fewer beacons with it than with a
    plain XADD (bench/README.md). So while a counter is far below its limit
    (at most EXACT_SHARE of it, as far as this process knows: the count
    Redis last returned plus what this process has counted since), and what
    it knows is less than FLUSH_SECONDS old, a request is counted here.
    Otherwise it is counted in Redis before its append, atomically, as
    before, and when what this process knows is older, the counts it has
    gathered go along and it learns the totals back. A counter can then pass
    its limit only when requests add more than the rest of EXACT_SHARE of
    it within FLUSH_SECONDS (a flood of more than 5 x the limit a second, at
    0.1 s and a half), and only by about what arrives in that time. A
    counter known to be past its limit refuses at once: within a fixed
    window, counts only grow.
    """

    EXACT_SHARE = 0.5
    FLUSH_SECONDS = 0.1
    # Counters of distinct clients in one window; beyond, new ones are
    # counted in Redis each time, so that memory stays bounded.
    MAX_KEYS = 50_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._start: int | None = None
        self._known: dict[str, int] = {}  # the counts Redis last returned
        self._pending: dict[str, int] = {}  # counted here, not yet in Redis
        self._flushed_at = -math.inf  # the first request's counts go at once

    def claim(self, window: Window) -> Claim:
        """Count one request against ``window``'s limits, or say how to."""
        with self._lock:
            if not self._in_window(window.start):
                return Claim(exact=[1] * len(window.keys))  # a request of the last window, late
            exact = False
            for limit, key in zip(window.limits, window.keys, strict=True):
                known = self._known.get(key, 0)
                if known > limit.per_window:
                    return Claim(refused=limit)
                pending = self._pending.get(key, 0)
                new_key = not pending and key not in self._known
                if known + pending + 1 > limit.per_window * self.EXACT_SHARE or (new_key and self._full()):
                    exact = True
            now = time.monotonic()
            stale = now - self._flushed_at >= self.FLUSH_SECONDS
            if not (exact or stale):
                for key in window.keys:
                    self._pending[key] = self._pending.get(key, 0) + 1
                return Claim()
            # Counted in Redis, by the script that appends it only within
            # the limits; when what this process knows is FLUSH_SECONDS old,
            # its other counts go along, and it learns the totals back.
            increments = [self._pending.pop(key, 0) + 1 for key in window.keys]
            flush = None
            if stale:
                self._flushed_at = now
                flush, self._pending = self._pending, {}
            return Claim(exact=increments, flush=flush)

    def _in_window(self, start: int) -> bool:
        """Move on to the window starting at ``start`` if it is a new one;
        False if it is an earlier one. Called with the lock held."""
        if self._start is None or start > self._start:
            # The last window's counts no longer matter.
            self._start = start
            self._known.clear()
            self._pending.clear()
        return start == self._start

    def _full(self) -> bool:
        return len(self._known) + len(self._pending) >= self.MAX_KEYS

    def learned(self, start: int, counts: dict[str, int]) -> None:
        """Counts Redis returned for the window starting at ``start``."""
        with self._lock:
            if not self._in_window(start):
                return
            for key, count in counts.items():
                if count > self._known.get(key, 0):
                    self._known[key] = count

    def forget(self) -> None:
        """Drop every count (Redis's counters were emptied: tests)."""
        with self._lock:
            self._start = None
            self._known.clear()
            self._pending.clear()
            self._flushed_at = -math.inf


local_counts = LocalCounts()
