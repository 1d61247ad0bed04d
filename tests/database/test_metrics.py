"""The database gauges under gunicorn's multiprocess registry: a stats read
in one worker shows in the scrape, whichever worker answers it."""

import http.client
import json
import time
from pathlib import Path

import pytest
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import free_port, gunicorn, subprocess_env

pytestmark = pytest.mark.django_db(transaction=True)


def _get(port: int, path: str, token: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}", "Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def _samples(exposition: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def test_pool_and_connection_gauges_reach_the_scrape(tmp_path: Path, read_token: str) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("pool and connection gauges are PostgreSQL's")
    port = free_port()
    env = subprocess_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"))
    with gunicorn(port, env=env, workers=2):
        deadline = time.monotonic() + 30
        status, body = 0, ""
        while time.monotonic() < deadline and status != 200:
            # The first requests can reach a worker still loading Django.
            status, body = _get(port, "/api/v1/performance/database/stats?window=5m", read_token)
        assert status == 200, body
        stats = json.loads(body)
        _, exposition = _get(port, "/api/v1/performance/metrics", read_token)

    samples = _samples(exposition)
    assert samples[("perfhub_db_connections", (("state", "active"),))] >= 1
    assert stats["pool"]["configured"]
    assert samples[("perfhub_db_pool_size", ())] >= stats["pool"]["size"] >= 1
    assert ("perfhub_db_pool_waiting", ()) in samples
