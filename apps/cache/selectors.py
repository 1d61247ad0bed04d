"""Cache statistics: Redis INFO over a window, PerfHub's own per-prefix
counts, and what the local-memory cache can tell."""

import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from apps.cache import metrics
from apps.cache.services import (
    SNAPSHOT_KEY,
    SNAPSHOT_RETENTION_SECONDS,
    InfoSnapshot,
    info_snapshot_store,
    redis_client,
)
from apps.metrics.cache_backends import ERROR, HIT, MISS

logger = logging.getLogger(__name__)

WINDOWS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600}
DEFAULT_WINDOW = "5m"
# A read stores a new snapshot when the newest is older than this, so that
# windows start within this many seconds of where they should, whoever reads.
SNAPSHOT_EVERY_SECONDS = 10

LOOKUPS_FAMILY = "perfhub_cache_lookups"


@dataclass
class KeyspaceRow:
    db: int
    keys: int
    expires: int


@dataclass
class RedisStats:
    version: str
    uptime_seconds: int
    window_start: datetime
    covered_seconds: float
    # True until a snapshot at least a window old exists: the figures then
    # cover only covered_seconds, since window_start.
    collecting: bool
    hits: int | None
    misses: int | None
    hit_rate: float | None
    evicted_keys: int | None
    expired_keys: int | None
    commands: int | None
    ops_per_second: float | None
    memory_used_bytes: int
    memory_peak_bytes: int
    memory_max_bytes: int
    eviction_policy: str
    connected_clients: int
    keyspace: list[KeyspaceRow]


@dataclass
class PrefixCount:
    backend: str
    prefix: str
    hits: int
    misses: int
    errors: int
    hit_rate: float | None


@dataclass
class LocalMemoryStats:
    entries: int
    max_entries: int
    note: str


@dataclass
class CacheStats:
    backend: str
    window: str
    window_seconds: int
    generated_at: datetime
    redis: RedisStats | None
    redis_error: str | None
    local_memory: LocalMemoryStats | None
    prefixes: list[PrefixCount]
    notes: list[str] = field(default_factory=list)


def _ratio(part: int | None, other: int | None) -> float | None:
    if part is None or other is None or part + other == 0:
        return None
    return round(part / (part + other), 4)


def _baseline(snapshots: list[InfoSnapshot], current: InfoSnapshot, window_seconds: int) -> InfoSnapshot | None:
    """The newest snapshot at least a window old, else the oldest one there
    is (the window is then still filling); only snapshots of the same Redis
    run count, since a restart sets the counters back to zero."""
    same_run = sorted((s for s in snapshots if s.run_id == current.run_id and s.at < current.at), key=lambda s: s.at)
    if not same_run:
        return None
    old_enough = [s for s in same_run if s.at <= current.at - window_seconds]
    return old_enough[-1] if old_enough else same_run[0]


def redis_stats(*, window_seconds: int, now: float | None = None) -> RedisStats:
    """Statistics of the Redis server behind the default cache. Rates are
    deltas between the current INFO and a stored snapshot, never the
    lifetime counters; a snapshot is stored when the newest is too old."""
    client = redis_client()
    now = time.time() if now is None else now
    pipe = client.pipeline(transaction=False)
    # INFO first: the ZRANGE after it is itself a keyspace hit, counted in
    # the next reading rather than this one.
    pipe.info()
    pipe.zrangebyscore(SNAPSHOT_KEY, now - SNAPSHOT_RETENTION_SECONDS, "+inf")
    info, raw_snapshots = pipe.execute()
    current = InfoSnapshot.from_info(info, at=now)
    snapshots = [InfoSnapshot.from_json(raw) for raw in raw_snapshots]
    newest = max((s.at for s in snapshots if s.run_id == current.run_id), default=None)
    if newest is None or newest <= now - SNAPSHOT_EVERY_SECONDS:
        info_snapshot_store(client=client, snapshot=current)

    base = _baseline(snapshots, current, window_seconds)
    deltas: dict[str, int | None] = dict.fromkeys(
        ("keyspace_hits", "keyspace_misses", "evicted_keys", "expired_keys", "total_commands_processed")
    )
    covered = 0.0
    if base is not None:
        covered = current.at - base.at
        values = {name: getattr(current, name) - getattr(base, name) for name in deltas}
        # CONFIG RESETSTAT zeroes the counters without a new run id.
        if all(value >= 0 for value in values.values()):
            deltas.update(values)
        else:
            covered = 0.0
    commands = deltas["total_commands_processed"]
    keyspace = [
        KeyspaceRow(db=int(name[2:]), keys=int(value.get("keys", 0)), expires=int(value.get("expires", 0)))
        for name, value in info.items()
        if name.startswith("db") and name[2:].isdigit() and isinstance(value, dict)
    ]
    return RedisStats(
        version=str(info.get("redis_version", "")),
        uptime_seconds=int(info.get("uptime_in_seconds", 0)),
        window_start=datetime.fromtimestamp(now - covered if covered else now, tz=UTC),
        covered_seconds=round(covered, 1),
        collecting=covered < window_seconds,
        hits=deltas["keyspace_hits"],
        misses=deltas["keyspace_misses"],
        hit_rate=_ratio(deltas["keyspace_hits"], deltas["keyspace_misses"]),
        evicted_keys=deltas["evicted_keys"],
        expired_keys=deltas["expired_keys"],
        commands=commands,
        ops_per_second=round(commands / covered, 2) if commands is not None and covered > 0 else None,
        memory_used_bytes=int(info.get("used_memory", 0)),
        memory_peak_bytes=int(info.get("used_memory_peak", 0)),
        memory_max_bytes=int(info.get("maxmemory", 0)),
        eviction_policy=str(info.get("maxmemory_policy", "")),
        connected_clients=int(info.get("connected_clients", 0)),
        keyspace=sorted(keyspace, key=lambda row: row.db),
    )


def _registry() -> Any:
    """The multiprocess registry over every gunicorn worker's files when
    PROMETHEUS_MULTIPROC_DIR is set (as /api/v1/performance/metrics reads
    it), else this process's own."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return registry
    return REGISTRY


def prefix_counts() -> list[PrefixCount]:
    """PerfHub's own lookups per backend and key prefix, since the server
    (all its workers) started."""
    tally: dict[tuple[str, str], dict[str, int]] = {}
    for family in _registry().collect():
        if family.name != LOOKUPS_FAMILY:
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            labels = sample.labels
            counts = tally.setdefault((labels["backend"], labels["prefix"]), {HIT: 0, MISS: 0, ERROR: 0})
            counts[labels["result"]] = counts.get(labels["result"], 0) + int(sample.value)
    return [
        PrefixCount(
            backend=backend,
            prefix=prefix,
            hits=counts[HIT],
            misses=counts[MISS],
            errors=counts[ERROR],
            hit_rate=_ratio(counts[HIT], counts[MISS]),
        )
        for (backend, prefix), counts in sorted(tally.items())
    ]


def local_memory_stats(backend: LocMemCache) -> LocalMemoryStats:
    return LocalMemoryStats(
        # Django's LocMemCache keeps no counters; its dict and its cull
        # threshold are all there is to read.
        entries=len(backend._cache),  # type: ignore[attr-defined]
        max_entries=backend._max_entries,
        note=(
            "The local-memory cache lives inside each web worker process: the entry count is that of the worker "
            "that answered. Django tracks no memory use, evictions (it culls a third of the entries when full) or "
            "expirations for it; PerfHub's own hits and misses per prefix below are summed over all workers."
        ),
    )


def cache_stats(*, window: str, now: float | None = None) -> CacheStats:
    window_seconds = WINDOWS[window]
    backend = caches["default"]
    stats = CacheStats(
        backend="locmem" if isinstance(backend, LocMemCache) else "redis" if redis_client() else type(backend).__name__,
        window=window,
        window_seconds=window_seconds,
        generated_at=datetime.fromtimestamp(time.time() if now is None else now, tz=UTC),
        redis=None,
        redis_error=None,
        local_memory=None,
        prefixes=prefix_counts(),
    )
    if stats.backend == "redis":
        try:
            stats.redis = redis_stats(window_seconds=window_seconds, now=now)
        except Exception as exc:
            # A page about the cache must still answer when the cache is down.
            logger.warning("Redis statistics unavailable", exc_info=True)
            stats.redis_error = f"Redis is unreachable: {exc}"
        else:
            _export(stats.redis, window)
    elif isinstance(backend, LocMemCache):
        stats.local_memory = local_memory_stats(backend)
    return stats


def _export(redis: RedisStats, window: str) -> None:
    metrics.redis_memory_used_bytes.set(redis.memory_used_bytes)
    metrics.redis_memory_peak_bytes.set(redis.memory_peak_bytes)
    metrics.redis_connected_clients.set(redis.connected_clients)
    if redis.ops_per_second is not None:
        metrics.redis_ops_per_second.labels(window=window).set(redis.ops_per_second)
    if redis.hit_rate is not None:
        metrics.redis_hit_ratio.labels(window=window).set(redis.hit_rate)
