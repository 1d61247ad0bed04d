"""The ops overview under gunicorn: read from the multiprocess files every
worker writes, and from a real Prometheus server scraping that gunicorn."""

import http.client
import json
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families
from pytest_django.fixtures import Settings

from apps.metrics.ops import prometheus_overview
from tests.helpers import free_port, gunicorn, redis_configured, require_tool, subprocess_env, wait_for_port

pytestmark = pytest.mark.django_db(transaction=True)

LOGINS = 24
WHOAMI = 10
CLIENTS = 4


def _get(port: int, path: str, token: str | None = None) -> tuple[int, str]:
    # A new connection per request so that requests spread over both workers.
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Connection": "close"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def _concurrently(count: int, port: int, path: str, token: str | None = None) -> None:
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        statuses = list(pool.map(lambda _: _get(port, path, token)[0], range(count)))
    assert statuses == [200] * count


def _wait_for_workers(prom_dir: Path, count: int, timeout: float = 30.0) -> None:
    # Each worker writes its live gauges (in flight, worker processes) when
    # the middleware module is imported.
    deadline = time.monotonic() + timeout
    while len(list(prom_dir.glob("gauge_livesum_*.db"))) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} workers did not load the app within {timeout}s")
        time.sleep(0.1)


def _ops(port: int, token: str) -> dict[str, Any]:
    status, body = _get(port, "/api/v1/performance/ops", token)
    assert status == 200, body
    return dict(json.loads(body))


def _rows(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["view"]: row for row in body["overview"]["rows"]}


def test_ops_overview_sums_both_workers(tmp_path: Path, read_token: str) -> None:
    prom_dir = tmp_path / "prom"
    port = free_port()
    env = subprocess_env(PROMETHEUS_MULTIPROC_DIR=str(prom_dir), PERFHUB_QUERY_SAMPLE_RATE="1")
    with gunicorn(port, env=env, workers=2):
        _wait_for_workers(prom_dir, 2)
        _concurrently(LOGINS, port, "/login/")
        _concurrently(WHOAMI, port, "/api/v1/whoami", read_token)

        first = _ops(port, read_token)
        _, exposition = _get(port, "/api/v1/performance/metrics", read_token)

    overview = first["overview"]
    assert overview["source"] == "local"
    assert overview["workers"] == 2
    assert overview["in_flight"] == 1  # the ops request itself
    # No earlier reading: counts since the workers started, over both of them.
    assert overview["window_seconds"] is None
    login = _rows(first)["login"]
    assert login["requests"] == LOGINS
    assert login["rate"] is None
    assert login["p50_ms"] is not None and login["p99_ms"] >= login["p50_ms"]
    whoami = _rows(first)["api-whoami"]
    assert whoami["requests"] == WHOAMI
    assert whoami["db_ms"] > 0  # the token lookup

    # Query insight: every whoami was sampled; the counters sum both workers,
    # and with Redis the stored aggregate does too (local memory is per worker).
    insight = {row["view"]: row for row in first["query_insight"]["views"]}
    if redis_configured():
        assert insight["api-whoami"]["sampled"] == WHOAMI
    else:
        assert 0 < insight["api-whoami"]["sampled"] <= WHOAMI
    samples = {
        (s.name, s.labels.get("view")): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
    }
    assert samples[("perfhub_query_insight_sampled_requests_total", "api-whoami")] == WHOAMI
    assert samples[("perfhub_view_db_seconds_count", "api-whoami")] == WHOAMI
    assert samples[("perfhub_web_worker_processes", None)] == 2


def test_rates_between_two_readings(tmp_path: Path, read_token: str) -> None:
    prom_dir = tmp_path / "prom"
    port = free_port()
    with gunicorn(port, env=subprocess_env(PROMETHEUS_MULTIPROC_DIR=str(prom_dir)), workers=2):
        _wait_for_workers(prom_dir, 2)
        _concurrently(LOGINS, port, "/login/")
        _ops(port, read_token)  # the first reading
        _concurrently(5, port, "/login/")
        time.sleep(1.1)
        second = _ops(port, read_token)

    login = _rows(second)["login"]
    window = second["overview"]["window_seconds"]
    if redis_configured() or window is not None:
        # The readings are shared through the cache: only the five since.
        assert login["requests"] == 5
        assert login["rate"] == pytest.approx(5 / window)
    else:
        # Local memory is per worker: the other worker had no reading yet.
        assert login["requests"] == LOGINS + 5


PROMETHEUS_CONFIG = """
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: perfhub
    metrics_path: /api/v1/performance/metrics
    authorization:
      type: Bearer
      credentials: {token}
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


@contextmanager
def _prometheus(tmp_path: Path, *, target_port: int, token: str) -> Iterator[str]:
    binary = require_tool("prometheus")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(PROMETHEUS_CONFIG.format(token=token, port=target_port))
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            wait_for_port(port, process=process)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _scraped(base_url: str) -> bool:
    url = f"{base_url}/api/v1/query?query=up"
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - a local test server
        result = json.load(response)["data"]["result"]
    return bool(result) and result[0]["value"][1] == "1"


def test_panels_from_a_real_prometheus(
    tmp_path: Path, read_token: str, viewer_client: Client, settings: Settings
) -> None:
    prom_dir = tmp_path / "prom"
    port = free_port()
    with (
        gunicorn(port, env=subprocess_env(PROMETHEUS_MULTIPROC_DIR=str(prom_dir)), workers=2),
        _prometheus(tmp_path, target_port=port, token=read_token) as prometheus_url,
    ):
        _wait_for_workers(prom_dir, 2)
        deadline = time.monotonic() + 60
        while not _scraped(prometheus_url):
            assert time.monotonic() < deadline, "Prometheus never scraped PerfHub"
            time.sleep(0.5)
        # Traffic between scrapes, until a rate and a percentile show up.
        while True:
            _concurrently(8, port, "/login/")
            overview = prometheus_overview(prometheus_url, timeout=5)
            assert overview.error is None, overview.error
            rows = {row.view: row for row in overview.rows}
            if "login" in rows and rows["login"].p50_ms is not None:
                break
            assert time.monotonic() < deadline, f"no login rate from Prometheus: {overview}"
            time.sleep(1)

        settings.PROMETHEUS_URL = prometheus_url
        response = viewer_client.get("/ops/")

    assert response.status_code == 200
    shown = response.context["overview"]
    assert shown.source == "prometheus"
    assert shown.error is None
    assert (shown.workers, shown.replicas) == (2, 1)
    login = {row.view: row for row in shown.rows}["login"]
    assert login.rate > 0
    assert login.p50_ms is not None and login.p50_ms > 0
    html = response.content.decode()
    assert f"Prometheus at {prometheus_url.removeprefix('http://')}" in html
    assert "<code>login</code>" in html
    assert "Rates over the last 5 minutes" in html
