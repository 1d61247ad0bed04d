"""Prometheus multiprocess mode under gunicorn: whichever worker answers a
scrape, every counter is the sum over all workers."""

import http.client
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import BASE_DIR, PYTHON, free_port, gunicorn, require_tool, subprocess_env

pytestmark = pytest.mark.django_db(transaction=True)

REQUESTS = 60
SCRAPES = 8
# Several clients at once: a sync worker holds one connection at a time, so
# while one is busy the other must accept. Sent one after another, all the
# requests could land on the same worker and summing would go untested.
CLIENTS = 4
RESPONSES = "django_http_responses_total_by_status_view_method_total"
LOGIN_OK = {"method": "GET", "status": "200", "view": "login"}
SCRAPE_OK = {"method": "GET", "status": "200", "view": "performance-metrics"}


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPMessage, str]:
    # A new connection per request: a kept-alive one would pin every request
    # to the worker that accepted it.
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"Connection": "close", **(headers or {})})
        response = connection.getresponse()
        return response.status, response.headers, response.read().decode()
    finally:
        connection.close()


def _concurrently(count: int, call: Callable[[], str]) -> list[str]:
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        return list(pool.map(lambda _: call(), range(count)))


def _wait_for_workers(prom_dir: Path, count: int, *, timeout: float = 30.0) -> None:
    """gunicorn listens before its workers have loaded Django; requests sent
    then all go to whichever worker is ready first. A worker creates its
    counter_<pid>.db when django-prometheus' middleware is loaded."""
    deadline = time.monotonic() + timeout
    while len(list(prom_dir.glob("counter_*.db"))) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} workers did not load the app within {timeout}s")
        time.sleep(0.1)


def _value(exposition: str, name: str, labels: dict[str, str]) -> float | None:
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def _value_by_worker(prom_dir: Path, name: str, labels: dict[str, str]) -> dict[int, float]:
    """Each worker writes its own counter_<pid>.db; reading them one at a
    time tells which worker served what."""
    values: dict[int, float] = {}
    for path in prom_dir.glob("counter_*.db"):
        pid = int(path.stem.removeprefix("counter_"))
        for metric in MultiProcessCollector.merge([str(path)]):
            for sample in metric.samples:
                if sample.name == name and sample.labels == labels:
                    values[pid] = sample.value
    return values


def _until_both_workers_served(prom_dir: Path, call: Callable[[], str], *, timeout: float = 30.0) -> dict[int, float]:
    """Requests, a few at a time, until each of the two workers has served
    one; the login counts by worker then. A worker's metric files appear
    while it loads the app, before it takes requests: on a fast machine the
    first one ready could serve a whole batch while the other still warms up
    (apps.vitals' user-agent parser, in post_worker_init)."""
    deadline = time.monotonic() + timeout
    while len(served := _value_by_worker(prom_dir, RESPONSES, LOGIN_OK)) < 2:
        if time.monotonic() > deadline:
            raise TimeoutError(f"both workers did not serve a request within {timeout}s: {served}")
        _concurrently(CLIENTS, call)
    return served


def test_scrapes_sum_counters_over_both_gunicorn_workers(tmp_path: Path, read_token: str) -> None:
    promtool = require_tool("promtool")
    prom_dir = tmp_path / "prom"
    port = free_port()
    env = subprocess_env(PROMETHEUS_MULTIPROC_DIR=str(prom_dir))

    def login_page() -> str:
        status, _, body = _get(port, "/login/")
        assert status == 200, body
        return body

    def scrape() -> str:
        status, headers, body = _get(port, "/api/v1/performance/metrics", {"Authorization": f"Bearer {read_token}"})
        assert status == 200, body
        assert headers["Content-Type"].startswith("text/plain")
        return body

    with gunicorn(port, env=env, workers=2):
        _wait_for_workers(prom_dir, 2)
        status, headers, _ = _get(port, "/api/v1/performance/metrics")
        assert status == 401
        assert headers["WWW-Authenticate"] == 'Bearer realm="api"'

        before = _until_both_workers_served(prom_dir, login_page)
        _concurrently(REQUESTS, login_page)
        expositions = _concurrently(SCRAPES, scrape)

        served = {
            pid: count - before.get(pid, 0) for pid, count in _value_by_worker(prom_dir, RESPONSES, LOGIN_OK).items()
        }
        scraped = _value_by_worker(prom_dir, RESPONSES, SCRAPE_OK)

    assert len(served) == 2, f"login requests by worker pid: {served}"
    assert all(0 < count < REQUESTS for count in served.values()), served
    assert sum(served.values()) == REQUESTS
    # Both workers answered scrapes, and each reported all the requests,
    # including those the other worker served.
    assert len(scraped) == 2, f"scrapes by worker pid: {scraped}"
    logins = REQUESTS + sum(before.values())
    assert [_value(exposition, RESPONSES, LOGIN_OK) for exposition in expositions] == [logins] * SCRAPES

    # promtool 2.42 has no --lint switch for `check metrics`: it always lints,
    # and a lint problem (a counter without _total, a missing HELP) exits 3.
    # So the default is the strictest setting, and it must print nothing.
    result = subprocess.run(
        [promtool, "check", "metrics"], input=expositions[-1], capture_output=True, text=True, timeout=30
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


# Run in a process of its own: multiprocess mode is chosen when
# prometheus_client is first imported, and the test process has it off.
_FORK_SCRIPT = """
import os
import django
from prometheus_client import Counter, values
django.setup()
from apps.metrics import multiprocess
assert values.ValueClass is multiprocess.LeanMmapedValue, "perfhub.settings did not install the lean values"
counter = Counter("perfhub_test_forked", "Counted before and after a fork.")
counter.inc()
child = os.fork()
if child == 0:
    counter.inc(5)
    os._exit(0)
os.waitpid(child, 0)
counter.inc()
print(os.getpid(), child)
"""


def _run_in_multiprocess_mode(script: str, prom_dir: Path) -> str:
    """Run ``script`` in a process of its own with PROMETHEUS_MULTIPROC_DIR
    set to ``prom_dir``; return what it printed."""
    prom_dir.mkdir()
    env = subprocess_env(PROMETHEUS_MULTIPROC_DIR=str(prom_dir))
    result = subprocess.run([PYTHON, "-c", script], env=env, cwd=BASE_DIR, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_forked_process_writes_samples_of_its_own(tmp_path: Path) -> None:
    """The pid a value checks on each write is read once per process
    (apps.metrics.multiprocess.LeanMmapedValue); a fork must still give the
    child files of its own and leave the parent's values whole."""
    prom_dir = tmp_path / "prom"
    parent, child = (int(pid) for pid in _run_in_multiprocess_mode(_FORK_SCRIPT, prom_dir).split())

    by_pid = _value_by_worker(prom_dir, "perfhub_test_forked_total", {})
    assert by_pid == {parent: 2.0, child: 5.0}


_GROWTH_SCRIPT = """
import django
from prometheus_client import Counter, Gauge, Histogram
django.setup()
first_values = Counter("perfhub_test_growth", "Written before and after its file grew.", ["n"])
first = first_values.labels(n="0")
first.inc(3)
gauge = Gauge("perfhub_test_live", "A live gauge.", multiprocess_mode="livesum")
gauge.inc(4)
histogram = Histogram("perfhub_test_seconds", "A histogram.", buckets=(0.1, 1.0))
# Enough values to grow the counter file past its first 64 KiB: the file is
# mapped again, larger, and the values made earlier must write to the new map.
for n in range(1, 2000):
    first_values.labels(n=str(n)).inc()
first.inc(2)
gauge.dec()
gauge.set(7)
histogram.observe(0.5)
histogram.observe(5)
"""


def test_values_land_in_the_files_the_collector_reads(tmp_path: Path) -> None:
    prom_dir = tmp_path / "prom"
    _run_in_multiprocess_mode(_GROWTH_SCRIPT, prom_dir)
    assert next(prom_dir.glob("counter_*.db")).stat().st_size > 65536

    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for metric in MultiProcessCollector.merge([str(path) for path in prom_dir.glob("*.db")])
        for sample in metric.samples
    }
    assert samples[("perfhub_test_growth_total", (("n", "0"),))] == 5.0
    assert samples[("perfhub_test_growth_total", (("n", "1999"),))] == 1.0
    assert samples[("perfhub_test_live", ())] == 7.0
    assert samples[("perfhub_test_seconds_bucket", (("le", "0.1"),))] == 0.0
    assert samples[("perfhub_test_seconds_bucket", (("le", "1.0"),))] == 1.0
    assert samples[("perfhub_test_seconds_bucket", (("le", "+Inf"),))] == 2.0
    assert samples[("perfhub_test_seconds_sum", ())] == 5.5
