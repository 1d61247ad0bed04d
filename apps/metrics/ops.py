"""The ops overview: rate, errors and duration per view (RED), from one of two sources.

1. This host's own Prometheus registry (the multiprocess files every gunicorn
   worker writes, or the process's registry when there is no multiprocess
   directory). Its counters only ever grow, so rates need two readings:
   readings are kept in the cache per host, at most one every
   READING_GAP_SECONDS, and the page shows what happened between the oldest
   reading of the last WINDOW_SECONDS and now. Percentiles come from the
   difference of the two readings' latency histograms.
2. A Prometheus server (settings.PROMETHEUS_URL) scraping every replica:
   the same panels from PromQL over PROMETHEUS_RANGE_SECONDS, for the history that
   survives restarts and for all replicas at once.
"""

import contextlib
import math
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django_prometheus.conf import PROMETHEUS_LATENCY_BUCKETS
from django_redis.exceptions import ConnectionInterrupted
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from redis.exceptions import RedisError

from apps.metrics.prometheus_api import PrometheusQueryError, prometheus_host, prometheus_query

LATENCY = "django_http_requests_latency_seconds_by_view_method"
RESPONSES = "django_http_responses_total_by_status_view_method_total"
DB_SECONDS = "perfhub_view_db_seconds"
CACHE_SECONDS = "perfhub_view_cache_seconds"
IN_FLIGHT = "perfhub_http_requests_in_flight"
WORKERS = "perfhub_web_worker_processes"

# django-prometheus' view label for requests that no URL pattern matched.
UNNAMED_VIEW = "<unnamed view>"

WINDOW_SECONDS = 60
READING_GAP_SECONDS = 10
# Below this, a rate is mostly noise from the two readings' own timing.
MIN_WINDOW_SECONDS = 1.0
PROMETHEUS_RANGE_SECONDS = 300
QUANTILES = (0.5, 0.95, 0.99)
# Shown beside the percentiles: the resolution they are interpolated within.
LATENCY_BUCKET_BOUNDS_MS = [round(b * 1000) for b in PROMETHEUS_LATENCY_BUCKETS if b != math.inf]

_CACHE_ERRORS = (RedisError, ConnectionInterrupted)


@dataclass(frozen=True)
class ViewRow:
    view: str
    requests: float
    rate: float | None
    errors_4xx: float
    errors_5xx: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    db_ms: float | None
    cache_ms: float | None

    @property
    def pct_4xx(self) -> float:
        return 100 * self.errors_4xx / self.requests if self.requests else 0.0

    @property
    def pct_5xx(self) -> float:
        return 100 * self.errors_5xx / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class OpsOverview:
    source: str  # "local" or "prometheus"
    source_label: str
    window_seconds: float | None
    rows: list[ViewRow] = field(default_factory=list)
    in_flight: float | None = None
    workers: int | None = None
    replicas: int | None = None
    error: str | None = None

    @property
    def requests(self) -> float:
        return sum(row.requests for row in self.rows)

    @property
    def rate(self) -> float | None:
        return self.requests / self.window_seconds if self.window_seconds else None

    @property
    def errors_4xx(self) -> float:
        return sum(row.errors_4xx for row in self.rows)

    @property
    def errors_5xx(self) -> float:
        return sum(row.errors_5xx for row in self.rows)


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The q-quantile of a histogram given as (upper bound, cumulative count) pairs.

    Computed as PromQL's histogram_quantile does, so the local and the
    Prometheus panels agree: linear interpolation inside the bucket holding
    the rank (the first bucket starts at 0), and a rank that falls in the
    +Inf bucket answers the highest finite bound.
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][0] != math.inf or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if bound == math.inf:
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


# --- this host's registry ------------------------------------------------------------------


def _registry() -> CollectorRegistry:
    # As django-prometheus' ExportToDjangoView decides: the multiprocess files
    # under gunicorn, the process's own registry otherwise.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return registry
    return REGISTRY


def _empty_view() -> dict[str, Any]:
    return {
        "responses": 0.0,
        "4xx": 0.0,
        "5xx": 0.0,
        "buckets": {},
        "db_sum": 0.0,
        "db_count": 0.0,
        "cache_sum": 0.0,
        "cache_count": 0.0,
    }


def registry_reading() -> dict[str, Any]:
    """Cumulative counts per view from the registry, small enough to cache."""
    views: dict[str, dict[str, Any]] = {}
    in_flight = 0.0
    sums = {
        f"{DB_SECONDS}_sum": "db_sum",
        f"{DB_SECONDS}_count": "db_count",
        f"{CACHE_SECONDS}_sum": "cache_sum",
        f"{CACHE_SECONDS}_count": "cache_count",
    }
    for family in _registry().collect():
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == IN_FLIGHT:
                in_flight += value
                continue
            if name != RESPONSES and name != f"{LATENCY}_bucket" and name not in sums:
                continue
            entry = views.setdefault(labels.get("view", UNNAMED_VIEW), _empty_view())
            if name == RESPONSES:
                entry["responses"] += value
                status = labels.get("status", "")
                if status[:1] in ("4", "5"):
                    entry[f"{status[0]}xx"] += value
            elif name in sums:
                entry[sums[name]] += value
            else:
                le = labels["le"]
                entry["buckets"][le] = entry["buckets"].get(le, 0.0) + value
    return {"t": time.time(), "views": views, "in_flight": in_flight}


def _delta(current: dict[str, Any], baseline: dict[str, Any] | None) -> dict[str, Any]:
    # A counter that went down means the server restarted (gunicorn empties
    # the multiprocess directory): as Prometheus does, count from zero.
    if baseline is None or current["responses"] < baseline["responses"]:
        return current
    # .get: a reading cached by the previous release may lack a field.
    delta = {key: current[key] - baseline.get(key, 0.0) for key in current if key != "buckets"}
    before = baseline.get("buckets", {})
    delta["buckets"] = {le: count - before.get(le, 0.0) for le, count in current["buckets"].items()}
    return delta


def _row(view: str, data: dict[str, Any], window: float | None) -> ViewRow:
    buckets = [(float(le), count) for le, count in data["buckets"].items()]
    quantiles = [histogram_quantile(q, buckets) for q in QUANTILES]
    p50, p95, p99 = (None if value is None else value * 1000 for value in quantiles)
    return ViewRow(
        view=view,
        requests=data["responses"],
        rate=data["responses"] / window if window else None,
        errors_4xx=data["4xx"],
        errors_5xx=data["5xx"],
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        db_ms=1000 * data["db_sum"] / data["db_count"] if data["db_count"] else None,
        cache_ms=1000 * data["cache_sum"] / data["cache_count"] if data["cache_count"] else None,
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_pids() -> list[int]:
    """Web worker processes on this host. Each one writes a live-gauge file
    named after its pid holding perfhub_web_worker_processes = 1; gunicorn
    removes it when the worker exits (child_exit). Files of other processes
    sharing the directory (no such gauge) and of pids that are gone (a
    master killed before it could clean up) are not counted."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return [os.getpid()]
    pids = []
    for path in Path(directory).glob("gauge_livesum_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        if not _pid_alive(pid):
            continue
        samples = (sample for metric in MultiProcessCollector.merge([str(path)]) for sample in metric.samples)
        if any(sample.name == WORKERS and sample.value for sample in samples):
            pids.append(pid)
    return sorted(pids)


def _readings_key() -> str:
    # The version changes with the reading's shape, so a new release ignores old readings.
    return f"metrics:ops:readings:v1:{socket.gethostname()}"


def _baseline_and_store(current: dict[str, Any]) -> dict[str, Any] | None:
    """The oldest kept reading at least MIN_WINDOW_SECONDS old; stores the
    current one when the newest kept is READING_GAP_SECONDS old. Several
    pages polling at once share the readings, so the window does not shrink
    with the number of viewers."""
    now = current["t"]
    try:
        readings: list[dict[str, Any]] = cache.get(_readings_key()) or []
    except _CACHE_ERRORS:
        return None
    readings = [r for r in readings if now - r["t"] <= WINDOW_SECONDS + READING_GAP_SECONDS]
    baseline = next((r for r in readings if now - r["t"] >= MIN_WINDOW_SECONDS), None)
    if not readings or now - readings[-1]["t"] >= READING_GAP_SECONDS:
        readings.append(current)
        # Without the cache the page still shows counts, only no rates.
        with contextlib.suppress(*_CACHE_ERRORS):
            cache.set(_readings_key(), readings, 3 * WINDOW_SECONDS)
    return baseline


def local_overview() -> OpsOverview:
    current = registry_reading()
    baseline = _baseline_and_store(current)
    window = current["t"] - baseline["t"] if baseline else None
    rows = []
    for view, data in current["views"].items():
        delta = _delta(data, (baseline or {}).get("views", {}).get(view) if baseline else None)
        if delta["responses"] > 0:
            rows.append(_row(view, delta, window))
    rows.sort(key=lambda row: (-row.requests, row.view))
    return OpsOverview(
        source="local",
        source_label=f"this host's registry ({socket.gethostname()})",
        window_seconds=window,
        rows=rows,
        in_flight=current["in_flight"],
        workers=len(worker_pids()),
    )


# --- a Prometheus server -------------------------------------------------------------------


def _number(raw: Any) -> float | None:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) or math.isinf(value) else value


def prometheus_overview(base_url: str, *, timeout: float) -> OpsOverview:
    """The same panels from PromQL; any failure becomes the panel's message."""
    window = f"[{PROMETHEUS_RANGE_SECONDS}s]"

    def by_view(promql: str) -> dict[str, float | None]:
        return {
            r["metric"].get("view", UNNAMED_VIEW): _number(r["value"][1])
            for r in prometheus_query(base_url, promql, timeout=timeout)
        }

    def scalar(promql: str) -> float | None:
        result = prometheus_query(base_url, promql, timeout=timeout)
        return _number(result[0]["value"][1]) if result else None

    def mean_ms(histogram: str) -> dict[str, float | None]:
        return by_view(
            f"1000 * sum by (view) (rate({histogram}_sum{window})) / sum by (view) (rate({histogram}_count{window}))"
        )

    seconds = float(PROMETHEUS_RANGE_SECONDS)
    host = prometheus_host(base_url)
    try:
        rates = by_view(f"sum by (view) (rate({RESPONSES}{window}))")
        rates_4xx = by_view(f'sum by (view) (rate({RESPONSES}{{status=~"4.."}}{window}))')
        rates_5xx = by_view(f'sum by (view) (rate({RESPONSES}{{status=~"5.."}}{window}))')
        quantiles = [
            by_view(f"histogram_quantile({q}, sum by (view, le) (rate({LATENCY}_bucket{window})))") for q in QUANTILES
        ]
        db_ms = mean_ms(DB_SECONDS)
        cache_ms = mean_ms(CACHE_SECONDS)
        in_flight = scalar(f"sum({IN_FLIGHT})")
        workers = scalar(f"sum({WORKERS})")
        replicas = scalar(f"count(count by (instance) ({WORKERS}))")
    except PrometheusQueryError as exc:
        return OpsOverview(
            source="prometheus",
            source_label=f"Prometheus at {host}",
            window_seconds=seconds,
            error=f"Prometheus at {host} could not be queried: {exc}",
        )

    def ms(value: float | None) -> float | None:
        return None if value is None else value * 1000

    rows = []
    for view, rate in rates.items():
        if not rate:
            continue
        rows.append(
            ViewRow(
                view=view,
                requests=rate * seconds,
                rate=rate,
                errors_4xx=(rates_4xx.get(view) or 0.0) * seconds,
                errors_5xx=(rates_5xx.get(view) or 0.0) * seconds,
                p50_ms=ms(quantiles[0].get(view)),
                p95_ms=ms(quantiles[1].get(view)),
                p99_ms=ms(quantiles[2].get(view)),
                db_ms=db_ms.get(view),
                cache_ms=cache_ms.get(view),
            )
        )
    rows.sort(key=lambda row: (-row.requests, row.view))
    return OpsOverview(
        source="prometheus",
        source_label=f"Prometheus at {host}",
        window_seconds=seconds,
        rows=rows,
        in_flight=in_flight,
        workers=None if workers is None else round(workers),
        replicas=None if replicas is None else round(replicas),
    )


def ops_overview_read() -> OpsOverview:
    if settings.PROMETHEUS_URL:
        return prometheus_overview(settings.PROMETHEUS_URL, timeout=settings.PROMETHEUS_TIMEOUT)
    return local_overview()
