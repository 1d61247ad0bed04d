"""Prometheus metrics of the resilience app.

Gauges use ``livemostrecent``: under gunicorn each worker writes its own
sample file, and the value a scrape should show is the latest any live
worker saw (the breaker state is shared, so every worker reports the same
thing once it has looked), not a sum over workers.
"""

from prometheus_client import Counter, Gauge

STATE_VALUES = {"closed": 0, "half-open": 1, "open": 2}
STATUS_VALUES = {"ok": 0, "degraded": 1, "down": 2, "skipped": -1}

BREAKER_STATE = Gauge(
    "perfhub_breaker_state",
    "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
    ["breaker"],
    multiprocess_mode="livemostrecent",
)
BREAKER_TRANSITIONS = Counter(
    "perfhub_breaker_transitions",
    "Circuit breaker state changes, counted by the process that made them.",
    ["breaker", "from_state", "to_state"],
)
DEGRADATION_MODE = Gauge(
    "perfhub_degradation_mode",
    "1 while a degradation mode (DESIGN.md, Degradation) is on.",
    ["mode"],
    multiprocess_mode="livemostrecent",
)
HEALTH_STATUS = Gauge(
    "perfhub_health_check_status",
    "Last result of each health check: 0 ok, 1 degraded, 2 down, -1 skipped.",
    ["check"],
    multiprocess_mode="livemostrecent",
)
HEALTH_LATENCY = Gauge(
    "perfhub_health_check_latency_seconds",
    "Duration of the last run of each health check.",
    ["check"],
    multiprocess_mode="livemostrecent",
)
STREAM_BACKLOG = Gauge(
    "perfhub_vitals_stream_backlog",
    "Beacon stream entries not yet written to the database, as of the last health check.",
    ["kind"],
    multiprocess_mode="livemostrecent",
)
