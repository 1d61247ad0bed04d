"""PerfHub's own Prometheus metrics, beside the ones django-prometheus defines.

django-prometheus counts requests and their latency per view; what it lacks
for the ops overview is the split of each view's time into database and
cache time, requests in flight and the number of worker processes. These are
observed by InstrumentationMiddleware from its per-request ledger, so no query
or cache call is timed twice.

Under gunicorn the values live in PROMETHEUS_MULTIPROC_DIR; the gauges use
``livesum`` so that a dead worker's values disappear with it (gunicorn's
child_exit calls mark_process_dead).
"""

from django.http import HttpRequest
from prometheus_client import Gauge, Histogram

from apps.metrics.ops import UNNAMED_VIEW

# Finer than django-prometheus' latency buckets at the low end: most views
# spend a few milliseconds in the database and well under one in the cache.
_TIME_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))

VIEW_DB_SECONDS = Histogram(
    "perfhub_view_db_seconds",
    "Time one request spent in SQL queries, by view.",
    ["view"],
    buckets=_TIME_BUCKETS,
)
VIEW_CACHE_SECONDS = Histogram(
    "perfhub_view_cache_seconds",
    "Time one request spent in cache calls, by view.",
    ["view"],
    buckets=_TIME_BUCKETS,
)
REQUESTS_IN_FLIGHT = Gauge(
    "perfhub_http_requests_in_flight",
    "Requests being served right now.",
    multiprocess_mode="livesum",
)
WORKER_PROCESSES = Gauge(
    "perfhub_web_worker_processes",
    "Web worker processes alive (each live process counts one).",
    multiprocess_mode="livesum",
)
WORKER_PROCESSES.set(1)


def view_name(request: HttpRequest) -> str:
    """The view label django-prometheus uses, so that our series join its own."""
    match = getattr(request, "resolver_match", None)
    if match is not None and match.view_name is not None:
        return str(match.view_name)
    return UNNAMED_VIEW
