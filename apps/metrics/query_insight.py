"""Query insight: SQL counts, duplicate queries and N+1 patterns per view.

A share of requests (settings.QUERY_SAMPLE_RATE) runs with an extra
``connection.execute_wrapper`` that notes each statement and a fingerprint
of its parameters. After the response, the request is summarised:

- a *duplicate* is a statement run again with the same parameters (the
  extra runs are counted);
- an *N+1 shape* is a statement run with more than NPLUSONE_THRESHOLD
  different parameter sets, as a loop over rows that reads related rows
  one by one does.

Summaries are added up per view in storage every worker sees: a hash per
view in Redis, updated by one Lua script so that concurrent workers neither
lose counts nor race on the maximum; on the embedded default, the
local-memory cache. Examples keep the SQL text only, with its placeholders:
parameter values may hold secrets and are never stored, only hashed.

django-debug-toolbar and nplusone do similar work for one developer's
requests; neither aggregates production samples across workers, hence this.
"""

import logging
import random
import threading
import time
from collections import Counter as TallyCounter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.db import connections
from django_redis.cache import RedisCache
from prometheus_client import Counter
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

# Long statements (big IN lists) are cut: the shape is what matters.
EXAMPLE_MAX_CHARS = 2000
# Views are bounded by the URLconf, but unnamed views and test URLconfs
# could add more; the least recently seen ones are dropped past this.
MAX_VIEWS = 500
RETENTION_SECONDS = 7 * 24 * 3600
_INDEX_KEY = "metrics:query_insight:views"
_VIEW_KEY = "metrics:query_insight:view:"
_LOCAL_KEY = "metrics:query_insight:local"

SAMPLED_REQUESTS = Counter(
    "perfhub_query_insight_sampled_requests", "Requests whose SQL queries were recorded, by view.", ["view"]
)
SAMPLED_QUERIES = Counter("perfhub_query_insight_queries", "SQL queries run by sampled requests, by view.", ["view"])
DUPLICATE_QUERIES = Counter(
    "perfhub_query_insight_duplicate_queries",
    "Repeated runs of a statement with the same parameters in sampled requests, by view.",
    ["view"],
)
NPLUSONE_SHAPES = Counter(
    "perfhub_query_insight_nplusone",
    "Statements run with more than the N+1 threshold of different parameter sets in one sampled request, by view.",
    ["view"],
)


class QuerySample:
    """An execute wrapper noting every statement of one request."""

    def __init__(self) -> None:
        self.calls: dict[str, TallyCounter[int]] = {}

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
        # A hash, not the values: they can be secrets and are never kept.
        self.calls.setdefault(sql, TallyCounter())[hash(repr(params))] += 1
        return execute(sql, params, many, context)


def query_sample_start(wrappers: ExitStack) -> QuerySample | None:
    """Decide whether this request is sampled; if so, start recording its SQL.

    An unsampled request costs one random() call (none when sampling is off).
    """
    rate = settings.QUERY_SAMPLE_RATE
    if not rate or random.random() >= rate:  # noqa: S311 - sampling, not security
        return None
    sample = QuerySample()
    for connection in connections.all(initialized_only=False):
        wrappers.enter_context(connection.execute_wrapper(sample))
    return sample


@dataclass(frozen=True)
class RequestQueries:
    """One sampled request, summarised."""

    queries: int
    duplicates: int
    duplicate_sql: str
    duplicate_count: int
    nplusone: int
    nplusone_sql: str
    nplusone_count: int


def sample_summarize(sample: QuerySample, *, threshold: int) -> RequestQueries:
    queries = duplicates = nplusone = 0
    duplicate_sql = nplusone_sql = ""
    duplicate_count = nplusone_count = 0
    for sql, by_params in sample.calls.items():
        runs = by_params.total()
        queries += runs
        extra = runs - len(by_params)
        duplicates += extra
        if extra:
            worst = max(by_params.values())
            if worst > duplicate_count:
                duplicate_sql, duplicate_count = sql, worst
        if len(by_params) > threshold:
            nplusone += 1
            if runs > nplusone_count:
                nplusone_sql, nplusone_count = sql, runs
    return RequestQueries(
        queries=queries,
        duplicates=duplicates,
        duplicate_sql=duplicate_sql[:EXAMPLE_MAX_CHARS],
        duplicate_count=duplicate_count,
        nplusone=nplusone,
        nplusone_sql=nplusone_sql[:EXAMPLE_MAX_CHARS],
        nplusone_count=nplusone_count,
    )


@dataclass(frozen=True)
class ViewInsight:
    """What the sampled requests of one view added up to."""

    view: str
    sampled: int
    queries: int
    max_queries: int
    duplicates: int
    duplicate_sql: str
    duplicate_count: int
    nplusone: int
    nplusone_sql: str
    nplusone_count: int
    last_seen: datetime

    @property
    def mean_queries(self) -> float:
        return self.queries / self.sampled if self.sampled else 0.0


def query_sample_record(*, view: str, sample: QuerySample) -> None:
    summary = sample_summarize(sample, threshold=settings.NPLUSONE_THRESHOLD)
    SAMPLED_REQUESTS.labels(view).inc()
    SAMPLED_QUERIES.labels(view).inc(summary.queries)
    DUPLICATE_QUERIES.labels(view).inc(summary.duplicates)
    NPLUSONE_SHAPES.labels(view).inc(summary.nplusone)
    try:
        _store().add(view=view, summary=summary, now=time.time())
    except RedisError as exc:
        # Insight is best effort: a Redis outage must not fail the request
        # it samples (the resilience app reports the outage itself).
        logger.warning("query insight not recorded for %s: %s", view, exc)


def query_insight_views() -> list[ViewInsight]:
    """Every recorded view, most recently seen first."""
    return _store().read()


class _RedisStore:
    # Adds one request's summary to the view's hash, keeps the worst example
    # of each kind, and drops the least recently seen views past MAX_VIEWS.
    # One script, so concurrent workers' updates never interleave.
    _SCRIPT = """
local h = KEYS[1]
local queries = tonumber(ARGV[3])
redis.call('HINCRBY', h, 'sampled', 1)
redis.call('HINCRBY', h, 'queries', queries)
if queries > tonumber(redis.call('HGET', h, 'max_queries') or '-1') then
  redis.call('HSET', h, 'max_queries', queries)
end
redis.call('HINCRBY', h, 'duplicates', ARGV[4])
redis.call('HINCRBY', h, 'nplusone', ARGV[7])
local dup_count = tonumber(ARGV[6])
if dup_count > 0 and dup_count >= tonumber(redis.call('HGET', h, 'duplicate_count') or '0') then
  redis.call('HSET', h, 'duplicate_sql', ARGV[5], 'duplicate_count', dup_count)
end
local np_count = tonumber(ARGV[9])
if np_count > 0 and np_count >= tonumber(redis.call('HGET', h, 'nplusone_count') or '0') then
  redis.call('HSET', h, 'nplusone_sql', ARGV[8], 'nplusone_count', np_count)
end
redis.call('HSET', h, 'view', ARGV[1], 'last_seen', ARGV[2])
redis.call('EXPIRE', h, ARGV[11])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[11])
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[10])
if extra > 0 then
  local dropped = redis.call('ZPOPMIN', KEYS[2], extra)
  for i = 1, #dropped, 2 do
    redis.call('DEL', ARGV[12] .. dropped[i])
  end
end
return 1
"""

    def __init__(self, backend: RedisCache) -> None:
        self.backend = backend
        self.client = backend.client.get_client(write=True)

    def _view_key(self, view: str) -> str:
        return str(self.backend.make_key(_VIEW_KEY + view))

    def add(self, *, view: str, summary: RequestQueries, now: float) -> None:
        self.client.eval(
            self._SCRIPT,
            2,
            self._view_key(view),
            self.backend.make_key(_INDEX_KEY),
            view,
            now,
            summary.queries,
            summary.duplicates,
            summary.duplicate_sql,
            summary.duplicate_count,
            summary.nplusone,
            summary.nplusone_sql,
            summary.nplusone_count,
            MAX_VIEWS,
            RETENTION_SECONDS,
            self._view_key(""),
        )

    def read(self) -> list[ViewInsight]:
        views = [v.decode() for v in self.client.zrevrange(self.backend.make_key(_INDEX_KEY), 0, MAX_VIEWS - 1)]
        pipe = self.client.pipeline(transaction=False)
        for view in views:
            pipe.hgetall(self._view_key(view))
        rows = []
        for fields in pipe.execute():
            if fields:
                rows.append(_insight_from({k.decode(): v.decode() for k, v in fields.items()}))
        return rows


class _LocalStore:
    """The embedded default: the local-memory cache, which is per process
    anyway. A lock makes the read-modify-write safe between threads."""

    _lock = threading.Lock()

    def add(self, *, view: str, summary: RequestQueries, now: float) -> None:
        with self._lock:
            stored: dict[str, dict[str, Any]] = caches["default"].get(_LOCAL_KEY) or {}
            entry = stored.setdefault(view, {"view": view, "sampled": 0, "queries": 0, "max_queries": 0})
            entry["sampled"] += 1
            entry["queries"] += summary.queries
            entry["max_queries"] = max(entry["max_queries"], summary.queries)
            for kind, count in (
                ("duplicates", summary.duplicates),
                ("nplusone", summary.nplusone),
            ):
                entry[kind] = entry.get(kind, 0) + count
            if summary.duplicate_count and summary.duplicate_count >= entry.get("duplicate_count", 0):
                entry["duplicate_sql"], entry["duplicate_count"] = summary.duplicate_sql, summary.duplicate_count
            if summary.nplusone_count and summary.nplusone_count >= entry.get("nplusone_count", 0):
                entry["nplusone_sql"], entry["nplusone_count"] = summary.nplusone_sql, summary.nplusone_count
            entry["last_seen"] = now
            if len(stored) > MAX_VIEWS:
                oldest = min(stored.values(), key=lambda e: e["last_seen"])
                del stored[oldest["view"]]
            caches["default"].set(_LOCAL_KEY, stored, RETENTION_SECONDS)

    def read(self) -> list[ViewInsight]:
        stored: dict[str, dict[str, Any]] = caches["default"].get(_LOCAL_KEY) or {}
        rows = [_insight_from(entry) for entry in stored.values()]
        return sorted(rows, key=lambda row: row.last_seen, reverse=True)


def _insight_from(fields: dict[str, Any]) -> ViewInsight:
    return ViewInsight(
        view=str(fields["view"]),
        sampled=int(fields.get("sampled", 0)),
        queries=int(fields.get("queries", 0)),
        max_queries=int(fields.get("max_queries", 0)),
        duplicates=int(fields.get("duplicates", 0)),
        duplicate_sql=str(fields.get("duplicate_sql", "")),
        duplicate_count=int(fields.get("duplicate_count", 0)),
        nplusone=int(fields.get("nplusone", 0)),
        nplusone_sql=str(fields.get("nplusone_sql", "")),
        nplusone_count=int(fields.get("nplusone_count", 0)),
        last_seen=datetime.fromtimestamp(float(fields.get("last_seen", 0)), tz=UTC),
    )


def _store() -> "_RedisStore | _LocalStore":
    backend = caches["default"]
    if isinstance(backend, RedisCache):
        return _RedisStore(backend)
    return _LocalStore()
