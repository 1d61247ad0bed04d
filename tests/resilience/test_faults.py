"""Fault tests with real processes (marked slow; they run in CI).

Redis: a private redis-server that the test stops and restarts under a
gunicorn PerfHub while beacons, pages and API calls keep coming. Database:
a gunicorn PerfHub whose DATABASE_URL points at a closed port. The shared
PostgreSQL and Redis servers are never touched.
"""

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings

from apps.vitals.models import Metric, Site
from apps.vitals.services import metrics_store
from apps.vitals.stream import StreamConsumer
from tests.helpers import BASE_DIR, PYTHON, free_port, gunicorn, require_tool, subprocess_env, wait_for_port
from tests.vitals.helpers import CHROME_DESKTOP, ORIGIN, beacon, lcp

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


class PrivateRedis:
    """A throwaway redis-server on its own port, without persistence: what
    it holds is lost when it stops, as after a crash."""

    def __init__(self) -> None:
        self.binary = require_tool("redis-server")
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, process=self.process)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


@contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def http(
    method: str, url: str, *, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes, float]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})  # noqa: S310 - local test server
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, response.read(), time.perf_counter() - started
    except urllib.error.HTTPError as error:
        return error.code, error.read(), time.perf_counter() - started


def until(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout}s: {what}")


class Traffic:
    """Beacons, pages and API reads against one server, asserting on the
    way that none of them fails with a 5xx (beacons: a 202 each)."""

    def __init__(self, base: str, site: Site, session: str, token: str) -> None:
        self.base, self.site, self.token = base, site, token
        self.cookie = {"Cookie": f"sessionid={session}"}
        self.sent = 0

    def beacon(self) -> None:
        self.sent += 1
        status, body, _ = http(
            "POST",
            f"{self.base}/api/v1/vitals/collect?key={self.site.public_key}",
            body=json.dumps(beacon(lcp(n=self.sent))).encode(),
            headers={"Content-Type": "text/plain", "Origin": ORIGIN, "User-Agent": CHROME_DESKTOP},
        )
        assert status == 202, body

    def pages(self) -> None:
        for path in ("/", "/vitals/", "/resilience/"):
            status, body, _ = http("GET", self.base + path, headers=self.cookie)
            assert status == 200, (path, status, body[:500])

    def api(self, path: str) -> tuple[int, dict[str, Any]]:
        status, body, _ = http("GET", f"{self.base}/api/v1/performance/{path}", headers=self.auth)
        assert status < 500 or (path == "health" and status == 503), body
        return status, json.loads(body)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def breaker_states(self) -> dict[str, str]:
        return {b["name"]: b["state"] for b in self.api("resilience")[1]["breakers"]}

    def round(self) -> dict[str, str]:
        self.beacon()
        self.pages()
        return self.breaker_states()


def drain(redis_url: str) -> int:
    with override_settings(REDIS_URL=redis_url):
        consumer = StreamConsumer(store=lambda records: metrics_store(records=records), block_ms=10)
    consumer.ensure_group()
    total = 0
    while written := consumer.poll():
        total += written
    return total


def test_redis_stopped_and_restarted_while_requests_flow(owner: User, read_token: str) -> None:
    site = Site.objects.create(name="faulty", allowed_origins=[ORIGIN])
    client = Client()
    client.force_login(owner)
    session = client.cookies["sessionid"].value
    with private_redis() as redis_server:
        port = free_port()
        env = subprocess_env(REDIS_URL=redis_server.url, PERFHUB_BREAKER_RESET_SECONDS="2")
        with gunicorn(port, env=env, workers=2):
            traffic = Traffic(f"http://127.0.0.1:{port}", site, session, read_token)

            # 1. Healthy: beacons go to the stream; a worker's work is done here.
            for _ in range(5):
                assert set(traffic.round().values()) == {"closed"}
            status, health = traffic.api("health")
            assert status == 200
            assert {c["name"]: c["status"] for c in health["checks"]}["cache"] == "ok"
            assert drain(redis_server.url) == 5

            # 2. Redis dies. Everything keeps answering; the breaker opens.
            redis_server.stop()
            until(
                lambda: "open" in {traffic.round()[name] for name in ("redis-cache", "redis-stream")},
                timeout=20,
                what="a Redis breaker reported open",
            )
            status, health = traffic.api("health")
            assert status == 200, health  # degraded: the cache and the stream have fallbacks
            assert health["status"] == "degraded"
            checks = {c["name"]: c for c in health["checks"]}
            assert checks["cache"]["status"] == "degraded"
            assert "cache bypassed" in checks["cache"]["message"]
            modes = {m["name"]: m for m in traffic.api("resilience")[1]["degradation_modes"]}
            # The mode is on wherever the breaker is open (per process while
            # the shared state in Redis is unreachable).
            assert modes["redis-down"]["effect"].startswith("The cache is bypassed")
            # Prometheus sees the transitions, summed over the gunicorn workers.
            status, metrics, _ = http("GET", f"{traffic.base}/api/v1/performance/metrics", headers=traffic.auth)
            assert status == 200
            assert b'perfhub_breaker_transitions_total{breaker="redis-' in metrics
            for _ in range(5):
                traffic.round()
            # Nothing lost: every beacon of the outage is in the database.
            assert Metric.objects.filter(site=site).count() == traffic.sent

            # 3. Redis comes back (empty): the breakers close by themselves.
            redis_server.start()
            closed_in_a_row = 0

            def closed_again() -> bool:
                nonlocal closed_in_a_row
                states = traffic.round()
                closed = states["redis-cache"] == states["redis-stream"] == "closed"
                closed_in_a_row = closed_in_a_row + 1 if closed else 0
                return closed_in_a_row >= 6  # answered by both workers, very likely

            until(closed_again, timeout=30, what="the Redis breakers closed after recovery")
            status, health = traffic.api("health")
            assert status == 200
            assert {c["name"]: c["status"] for c in health["checks"]}["cache"] == "ok"
            # Beacons flow to the stream again; none was lost on the way.
            in_stream = drain(redis_server.url)
            assert in_stream > 0
            assert Metric.objects.filter(site=site).count() == traffic.sent


def test_database_unreachable_readyz_and_health_answer_503_in_time() -> None:
    dead = f"postgres://postgres@127.0.0.1:{free_port()}/perfhub"
    env = subprocess_env(DATABASE_URL=dead, PERFHUB_DB_CONNECT_TIMEOUT="2", PERFHUB_DB_POOL_TIMEOUT="3")
    port = free_port()
    with gunicorn(port, env=env, workers=1):
        status, body, elapsed = http("GET", f"http://127.0.0.1:{port}/readyz")
        assert status == 503
        assert json.loads(body)["failing"] == ["database"]
        assert elapsed < 10
        # The health endpoint cannot authenticate anyone without the database:
        # it answers 503 naming it, rather than a 500.
        status, body, elapsed = http(
            "GET",
            f"http://127.0.0.1:{port}/api/v1/performance/health",
            headers={"Authorization": "Bearer phk_0000000000000000000000000000000000000000"},
        )
        assert status == 503, body
        report = json.loads(body)
        assert report["status"] == "down"
        assert [c["name"] for c in report["checks"] if c["status"] == "down"] == ["database"]
        assert elapsed < 10
        status, body, _ = http(
            "GET",
            f"http://127.0.0.1:{port}/api/v1/performance/resilience",
            headers={"Authorization": "Bearer phk_0000000000000000000000000000000000000000"},
        )
        assert status == 503
        assert json.loads(body)["error"].startswith("the database is unreachable")


def test_health_command_with_the_database_unreachable_exits_1_naming_it() -> None:
    dead = f"postgres://postgres@127.0.0.1:{free_port()}/perfhub"
    started = time.perf_counter()
    result = subprocess.run(
        [PYTHON, "manage.py", "health", "--json", "--timeout", "3"],
        cwd=BASE_DIR,
        env=subprocess_env(DATABASE_URL=dead, PERFHUB_DB_CONNECT_TIMEOUT="2", PERFHUB_DB_POOL_TIMEOUT="2"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses["database"] == "down"
    assert statuses["disk"] == "ok"
    assert time.perf_counter() - started < 20
