"""Prometheus metrics of the cache app. The per-prefix lookup counters live
with the cache backends (apps.metrics.cache_backends), on every request's path.

The Redis gauges are set whenever the statistics are read (the page, the API):
with several workers, "mostrecent" reports the latest reading of any of them.
"""

from prometheus_client import Counter, Gauge

redis_memory_used_bytes = Gauge(
    "perfhub_redis_memory_used_bytes",
    "Memory Redis reports as used (INFO used_memory), at the last statistics read.",
    multiprocess_mode="mostrecent",
)
redis_memory_peak_bytes = Gauge(
    "perfhub_redis_memory_peak_bytes",
    "Redis's peak memory use (INFO used_memory_peak), at the last statistics read.",
    multiprocess_mode="mostrecent",
)
redis_connected_clients = Gauge(
    "perfhub_redis_connected_clients",
    "Clients connected to Redis, at the last statistics read.",
    multiprocess_mode="mostrecent",
)
redis_ops_per_second = Gauge(
    "perfhub_redis_ops_per_second",
    "Commands Redis processed per second over the window, from INFO snapshot deltas.",
    ["window"],
    multiprocess_mode="mostrecent",
)
redis_hit_ratio = Gauge(
    "perfhub_redis_hit_ratio",
    "keyspace_hits / (hits + misses) over the window, from INFO snapshot deltas.",
    ["window"],
    multiprocess_mode="mostrecent",
)
response_cache_requests = Counter(
    "perfhub_api_response_cache_requests_total",
    "Stats API requests by view and response cache outcome (hit, miss, off, bypass, error).",
    ["view", "result"],
)
