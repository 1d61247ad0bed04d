"""Prometheus gauges for the connection pool and the server's connections.

Under gunicorn every worker has its own pool, so the pool gauges are summed
over live processes ("livesum"); each process updates its own whenever it
reads the database statistics. Connection counts are a server-wide fact that
any process may read, so the most recent reading wins ("mostrecent").
"""

from typing import Any

from prometheus_client import Gauge

POOL_SIZE = Gauge("perfhub_db_pool_size", "Connections open in the psycopg pools.", multiprocess_mode="livesum")
POOL_IN_USE = Gauge("perfhub_db_pool_in_use", "Pool connections lent to requests or jobs.", multiprocess_mode="livesum")
POOL_WAITING = Gauge("perfhub_db_pool_waiting", "Requests waiting for a pool connection.", multiprocess_mode="livesum")
CONNECTIONS = Gauge(
    "perfhub_db_connections",
    "Client connections to PerfHub's database, by state (pg_stat_activity).",
    ["state"],
    multiprocess_mode="mostrecent",
)


def pool_metrics_update(pool: dict[str, Any]) -> None:
    if not pool.get("configured"):
        return
    POOL_SIZE.set(pool["size"])
    POOL_IN_USE.set(pool["in_use"])
    POOL_WAITING.set(pool["waiting"])


def connection_metrics_update(by_state: dict[str, int]) -> None:
    for state, count in by_state.items():
        CONNECTIONS.labels(state=state).set(count)
