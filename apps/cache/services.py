"""Snapshots of Redis INFO counters, the raw material of windowed rates.

Redis only keeps lifetime counters (keyspace_hits since start-up, …); a rate
over the last five minutes is the difference between now and a snapshot taken
five minutes ago. Snapshots live in a small sorted set in Redis itself (score:
the time taken), so every web worker and replica sees the same history, and
are trimmed past the longest window.
"""

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from django.core.cache import caches
from django_redis.cache import RedisCache

# A raw Redis key, beside the cache's own (which carry KEY_PREFIX "perfhub:1:").
SNAPSHOT_KEY = "perfhub:cache:info-snapshots"
# The longest window (1 h) plus room for the snapshot that starts it.
SNAPSHOT_RETENTION_SECONDS = 3600 + 600
# A bound even if many replicas snapshot at once: 4000 small members.
SNAPSHOT_MAX_COUNT = 4000


@dataclass(frozen=True)
class InfoSnapshot:
    at: float
    run_id: str
    keyspace_hits: int
    keyspace_misses: int
    evicted_keys: int
    expired_keys: int
    total_commands_processed: int

    @classmethod
    def from_info(cls, info: dict[str, Any], *, at: float) -> "InfoSnapshot":
        return cls(
            at=at,
            run_id=str(info.get("run_id", "")),
            keyspace_hits=int(info.get("keyspace_hits", 0)),
            keyspace_misses=int(info.get("keyspace_misses", 0)),
            evicted_keys=int(info.get("evicted_keys", 0)),
            expired_keys=int(info.get("expired_keys", 0)),
            total_commands_processed=int(info.get("total_commands_processed", 0)),
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> "InfoSnapshot":
        return cls(**json.loads(raw))


def redis_client() -> Any:
    """The raw Redis client behind the default cache, or None when the cache
    is not Redis (the embedded default's local memory)."""
    if not isinstance(caches["default"], RedisCache):
        return None
    from django_redis import get_redis_connection

    return get_redis_connection("default")


def info_snapshot_store(*, client: Any, snapshot: InfoSnapshot) -> None:
    pipe = client.pipeline(transaction=False)
    # The time is part of the member, so two equal counter sets taken at
    # different times stay two snapshots.
    pipe.zadd(SNAPSHOT_KEY, {json.dumps(asdict(snapshot), separators=(",", ":")): snapshot.at})
    pipe.zremrangebyscore(SNAPSHOT_KEY, "-inf", snapshot.at - SNAPSHOT_RETENTION_SECONDS)
    pipe.zremrangebyrank(SNAPSHOT_KEY, 0, -SNAPSHOT_MAX_COUNT - 1)
    pipe.expire(SNAPSHOT_KEY, SNAPSHOT_RETENTION_SECONDS)
    pipe.execute()


def info_snapshot_take(*, at: float | None = None) -> InfoSnapshot | None:
    """Record Redis's counters now (stamped ``at``, default now); None on the
    local-memory cache. Redis errors propagate."""
    client = redis_client()
    if client is None:
        return None
    snapshot = InfoSnapshot.from_info(client.info(), at=time.time() if at is None else at)
    info_snapshot_store(client=client, snapshot=snapshot)
    return snapshot
