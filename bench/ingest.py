"""What PerfHub's beacon endpoint costs, and whether every 202 lands.

Starts two gunicorn servers with PerfHub's own gunicorn settings and the same
number of workers, both on the production path (PostgreSQL and Redis):

- **collect**: PerfHub as deployed (perfhub.settings, self-instrumentation
  on), loaded at POST /api/v1/vitals/collect;
- **parse_only**: the baseline, bench/parse_only.py: no middleware and one
  view that reads the body, json.loads it and answers 202, touching no
  database, cache or Redis.

wrk posts the same realistic beacons to both, in turn, for --duration seconds
each (bench/ingest.lua: five metrics with attribution as
static/perfhub/rum.js sends them, text/plain, a desktop Chrome User-Agent,
an Origin), every metric with an id of its own so that the server's
deduplication cannot hide a loss. No worker runs meanwhile: the beacons wait
in the Redis stream. Then the servers stop, `manage.py worker --once`
drains the stream into PostgreSQL, and the bench counts the rows stored for
its site against the metrics that the 202 answers accepted:

    .venv/bin/python bench/ingest.py

The bench prepares its database (migrate, a site "bench-ingest" allowing any
origin, emptied of the last run's rows as bench/drain.py does it) and
FLUSHES the Redis database it is given: give it databases of their own. The
rate limits are raised for the run, since all the load comes from 127.0.0.1.
--durable-redis runs a private redis-server that fsyncs every write instead,
so that a 202 means the beacon is on disk.

The last line printed is one JSON object, {"collect_rps": …,
"parse_only_rps": …, "ratio": …, "p99_ms": …, "accepted_metrics": …,
"stored_metrics": …, "lost": …, …}. Targets: ratio >= 0.8, p99_ms <= 50 and
lost = 0. The exit status is 0 whether or not they are met, and 1 when the
measurement itself went wrong (an answer other than 202, a socket error, a
stream that did not drain).
"""

import argparse
import http.client
import json
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

# Run as a script, sys.path[0] is bench/: the repository goes first, so that
# `bench` is the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    BASE_DIR,
    SERVER_ENV_DROPPED,
    BenchError,
    Server,
    check_load_options,
    free_port,
    inherited_env,
    load_average,
    machine_load,
    measure_in_workdir,
    print_result,
    process_tree_cpu_seconds,
    report_noise,
    run_python,
    serve,
    until_answered,
)
from perfhub.env import default_web_workers  # noqa: E402

WRK_SCRIPT = BASE_DIR / "bench" / "ingest.lua"
TARGET_RATIO = 0.8
TARGET_P99_MS = 50.0
SITE_NAME = "bench-ingest"
COLLECT_PATH = "/api/v1/vitals/collect"
# Far above what one machine can send in a run: the limits would otherwise
# answer 429 to the single client address the load comes from.
RATE_LIMIT = 1_000_000_000
# The metrics in one beacon of bench/ingest.lua and of check_beacon().
METRICS_PER_BEACON = 5
DRAIN_ATTEMPTS = 5

# Variables that would point the servers somewhere the bench did not choose
# or make the two differ in more than the settings module.
_INHERITED_ENV_DROPPED = SERVER_ENV_DROPPED | {
    "PERFHUB_RATE_LIMIT_PER_IP",
    "PERFHUB_RATE_LIMIT_PER_SITE",
    "PERFHUB_PROXY_COUNT",
}

# Run with the project's settings, in subprocesses, so that this process
# never configures Django itself. Each prints one JSON line.
_PREPARE_SCRIPT = """
import json
import sys
import django
django.setup()
import redis
from django.conf import settings
from bench.drain import site_reset
site = site_reset(sys.argv[1])
client = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
client.flushdb()
try:
    config = {**client.config_get("appendonly"), **client.config_get("appendfsync"), **client.config_get("save")}
    persistence = " ".join(f"{k}={v!r}" for k, v in sorted(config.items()))
except redis.RedisError as exc:
    persistence = f"unknown ({exc})"
print(json.dumps({"site_id": site.pk, "key": site.public_key, "redis_persistence": persistence}))
"""
_STATE_SCRIPT = """
import json
import sys
import django
django.setup()
import redis
from django.db import connection
from apps.vitals.stream import DEAD_LETTERS, GROUP, STREAM, redis_client
site_id = int(sys.argv[1])
with connection.cursor() as cursor:
    cursor.execute("SELECT count(*) FROM vitals_metric WHERE site_id = %s", [site_id])
    (rows,) = cursor.fetchone()
    cursor.execute("SELECT coalesce(sum(samples), 0), count(*) FROM vitals_rollup WHERE site_id = %s", [site_id])
    samples, rollups = cursor.fetchone()
client = redis_client()
try:
    pending = int(client.xpending(STREAM, GROUP)["pending"])
except redis.ResponseError:
    pending = 0  # no group yet: nothing read, nothing pending
print(json.dumps({
    "rows": rows, "rollup_samples": int(samples), "rollup_rows": rollups,
    "stream": int(client.xlen(STREAM)), "pending": pending, "dead_letters": int(client.xlen(DEAD_LETTERS)),
}))
"""

_WRK_LINE = re.compile(r"^ingest-wrk: (\{.*\})$", re.MULTILINE)


@dataclass
class WrkRun:
    seconds: float
    requests: int
    sent: int
    accepted_metrics: int
    latency_us: dict[str, float]
    # CPU used meanwhile by the server's processes and by Redis (see cpu_us).
    server_cpu_s: float = 0.0
    redis_cpu_s: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us(self) -> float:
        """CPU time per answer, the server's and Redis's, in microseconds."""
        return (self.server_cpu_s + self.redis_cpu_s) / max(self.requests, 1) * 1e6

    def latency_ms(self, name: str) -> float:
        return self.latency_us[name] / 1000


@dataclass
class Site:
    id: int
    key: str
    redis_persistence: str


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--database-url",
        default="postgres://postgres@127.0.0.1:5432/perfhub_ingest",
        help="PostgreSQL database for the collect server and the worker, migrated by the bench (default: %(default)s)",
    )
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/9",
        help="Redis database for both servers and the worker; FLUSHED at the start (default: %(default)s)",
    )
    parser.add_argument(
        "--durable-redis",
        action="store_true",
        help="instead of --redis-url, start a private redis-server on a free loopback port with "
        "appendonly yes and appendfsync always, so that a 202 means the beacon is on disk",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=default_web_workers(),
        help="gunicorn workers per server (default: PerfHub's, this machine's CPUs + 1: %(default)s)",
    )
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk run (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=1, help="collect/parse_only rounds (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of unmeasured load first (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default: %(default)s)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default: %(default)s)")
    args = parser.parse_args(argv)
    check_load_options(parser, args)
    if not args.database_url.startswith(("postgres://", "postgresql://")):
        parser.error("--database-url must be a PostgreSQL URL: the bench measures the production path")
    return args


def base_env(args: argparse.Namespace, data_dir: Path, redis_url: str) -> dict[str, str]:
    env = inherited_env(_INHERITED_ENV_DROPPED)
    env.update(
        PERFHUB_DATA_DIR=str(data_dir),
        DJANGO_SETTINGS_MODULE="perfhub.settings",
        DATABASE_URL=args.database_url,
        REDIS_URL=redis_url,
        PERFHUB_WEB_WORKERS=str(args.workers),
        DEBUG="False",
        # As deploy/k8s/configmap.yaml runs it.
        PERFHUB_LOG_JSON="True",
        PERFHUB_LOG_LEVEL="INFO",
        PERFHUB_INSTRUMENT="True",
        PERFHUB_RATE_LIMIT_PER_IP=str(RATE_LIMIT),
        PERFHUB_RATE_LIMIT_PER_SITE=str(RATE_LIMIT),
    )
    return env


def run_json(name: str, script: str, env: dict[str, str], *arguments: str) -> dict[str, Any]:
    output = run_python(name, ["-c", script, *arguments], env)
    try:
        data = json.loads(output.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise BenchError(f"{name} printed no JSON line:\n{output}") from None
    if not isinstance(data, dict):
        raise BenchError(f"{name} printed {data!r}, not a JSON object")
    return data


def prepare(env: dict[str, str]) -> Site:
    """Migrate, recreate the bench's site and empty the Redis database."""
    run_python("manage.py migrate", ["manage.py", "migrate", "--noinput"], env)
    data = run_json("preparing the site and Redis", _PREPARE_SCRIPT, env, SITE_NAME)
    return Site(id=int(data["site_id"]), key=str(data["key"]), redis_persistence=str(data["redis_persistence"]))


@contextmanager
def private_redis(workdir: Path) -> Iterator[str]:
    """A redis-server of the bench's own that acknowledges a write only once
    it is fsynced to its append-only file."""
    if shutil.which("redis-server") is None:
        raise BenchError("--durable-redis needs redis-server (Debian package redis-server)")
    port = free_port()
    directory = workdir / "redis"
    directory.mkdir()
    log = directory / "redis.log"
    command = [
        "redis-server",
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(directory),
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--save",
        "",
        "--logfile",
        str(log),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                raise BenchError(f"redis-server exited with {process.returncode}:\n{log.read_text(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError("the private redis-server did not answer within 10s")
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def check_beacon() -> bytes:
    """One beacon of the shape bench/ingest.lua sends, with ids of its own."""
    now_ms = int(time.time() * 1000)
    page_ms = now_ms - 5000
    metrics = [
        {
            "name": name,
            "value": value,
            "delta": value,
            "id": f"v6-{page_ms}-{random.randrange(10**12, 10**13)}",
            "rating": "good",
            "navigationType": "navigate",
            "attribution": {},
        }
        for name, value in (("LCP", 1800.0), ("INP", 90.0), ("CLS", 0.02), ("FCP", 1100.0), ("TTFB", 400.0))
    ]
    beacon = {
        "v": 1,
        "pageview": f"bench-check-{now_ms}",
        "url": "https://shop.example.com/",
        "route": "/",
        "sample_rate": 1,
        "sent_at": now_ms,
        "metrics": metrics,
    }
    return json.dumps(beacon).encode()


def post(server: Server, path: str, body: bytes) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request(
            "POST",
            path,
            body=body,
            headers={
                "Content-Type": "text/plain;charset=UTF-8",
                "Origin": "https://shop.example.com",
                "User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            },
        )
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def first_answer(server: Server, path: str, *, timeout: float = 60.0) -> int:
    """Wait until a worker has loaded the app, post one beacon and return
    the metrics it accepted."""
    status, body = until_answered(server, lambda: post(server, path, check_beacon()), timeout=timeout)
    try:
        accepted = int(json.loads(body).get("accepted", 0))
    except (ValueError, AttributeError):
        accepted = 0
    if status != 202 or accepted != METRICS_PER_BEACON:
        raise BenchError(
            f"POST {path} answered {status} {body[:500]!r} on the {server.name} server, "
            f"not 202 with {METRICS_PER_BEACON} metrics accepted.\n{server.log_tail()}"
        )
    return accepted


def wrk(server: Server, path: str, args: argparse.Namespace, duration: int) -> WrkRun:
    command = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{duration}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_SCRIPT),
        server.url(path),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    output = result.stdout + result.stderr
    line = _WRK_LINE.search(output)
    if result.returncode != 0 or line is None:
        raise BenchError(f"{' '.join(command[:-1])} {server.url(path)} failed:\n{output}")
    data = json.loads(line.group(1))
    statuses = {int(code): count for code, count in data["statuses"].items()}
    errors = {name: count for name, count in data["errors"].items() if count and name != "status"}
    # wrk counts any answer in its rate; a fast 429 or 500 would pass for speed.
    if set(statuses) - {202} or errors:
        raise BenchError(
            f"wrk saw answers other than 202 or socket errors from the {server.name} server: "
            f"statuses {statuses}, errors {errors}\nserver log:\n{server.log_tail()}"
        )
    return WrkRun(
        seconds=data["duration_us"] / 1e6,
        requests=int(data["requests"]),
        sent=int(data["sent"]),
        accepted_metrics=int(data["accepted_metrics"]),
        latency_us={name: float(value) for name, value in data["latency_us"].items()},
    )


def redis_cpu_seconds(redis_url: str) -> float:
    """The CPU time Redis has used since it started (INFO cpu, user and
    system, its background threads included)."""
    client = redis.Redis.from_url(redis_url)
    try:
        info = client.info("cpu")
    finally:
        client.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def server_accepted_metrics(server: Server) -> int:
    """The metrics the collect server answered 202 for, by its own Prometheus
    counter (apps.vitals.collect.METRICS), summed over every worker that ran,
    recycled ones included. It counts answers wrk never read because its
    time ran out while they were in flight."""
    from prometheus_client import CollectorRegistry, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(server.multiproc_dir))
    total = 0.0
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == "perfhub_vitals_metrics_total" and sample.labels.get("outcome") == "accepted":
                total += sample.value
    return int(total)


@dataclass
class Drain:
    seconds: float
    runs: int
    state: dict[str, Any]


def drain(env: dict[str, str], site: Site) -> Drain:
    """Run `manage.py worker --once` (which reads the stream until a read
    comes back empty) until the stream is empty and nothing is pending."""
    started = time.monotonic()
    for attempt in range(1, DRAIN_ATTEMPTS + 1):
        run_python("manage.py worker --once", ["manage.py", "worker", "--once"], env, timeout=1800)
        state = run_json("counting", _STATE_SCRIPT, env, str(site.id))
        if state["stream"] == 0 and state["pending"] == 0:
            return Drain(seconds=time.monotonic() - started, runs=attempt, state=state)
    raise BenchError(
        f"the stream did not drain in {DRAIN_ATTEMPTS} runs of manage.py worker --once: "
        f"{state['stream']} entries left, {state['pending']} pending"
    )


def worker_restarts(server: Server) -> int:
    """Workers gunicorn recycled during the run (max_requests in
    perfhub/gunicorn_conf.py): each loads the app again, and the requests
    queued meanwhile wait, which shows in the tail latency."""
    return server.log.read_text(errors="replace").count("Autorestarting worker")


def stream_fallbacks(server: Server) -> int:
    """Beacons the collect server wrote straight to the database because the
    stream failed (apps.vitals.services.beacon_ingest)."""
    return server.log.read_text(errors="replace").count("beacon stream unavailable")


@dataclass
class Measurement:
    runs: dict[str, list[WrkRun]]
    accepted_metrics: int
    server_accepted_metrics: int
    in_flight: int
    stream_entries: int
    fallbacks: int
    restarts: dict[str, int]
    drain: Drain
    redis_persistence: str


def measure(args: argparse.Namespace, workdir: Path) -> Measurement:
    runs: dict[str, list[WrkRun]] = {"collect": [], "parse_only": []}
    with ExitStack() as stack:
        redis_url = stack.enter_context(private_redis(workdir)) if args.durable_redis else args.redis_url
        env = base_env(args, workdir / "data", redis_url)
        site = prepare(env)
        path = f"{COLLECT_PATH}?key={site.key}"
        servers = ExitStack()
        stack.enter_context(servers)
        collect = servers.enter_context(serve("collect", env=env, workdir=workdir))
        parse_only = servers.enter_context(
            serve("parse_only", env={**env, "DJANGO_SETTINGS_MODULE": "bench.parse_only"}, workdir=workdir)
        )
        pair = {"collect": collect, "parse_only": parse_only}
        accepted = first_answer(collect, path)
        first_answer(parse_only, path)
        in_flight = 0

        print(
            f"POST {COLLECT_PATH} (5 metrics a beacon); gunicorn, {args.workers} workers per server; "
            f"wrk -t{args.threads} -c{args.connections}; {args.rounds} round(s) of {args.duration}s; "
            f"Redis persistence: {site.redis_persistence}; "
            f"{machine_load()}",
            flush=True,
        )
        # Only one worker of each server is known to be up; the warm-up also
        # gives the others time to load the app and open their connections.
        if args.warmup:
            for name, server in pair.items():
                run = wrk(server, path, args, args.warmup)
                if name == "collect":
                    accepted += run.accepted_metrics
                    in_flight += run.sent - run.requests
        for number in range(1, args.rounds + 1):
            # A/B, then B/A, as overhead.py: whichever runs second in a round
            # does not always meet the same moment of the machine's load.
            order = list(pair.items()) if number % 2 else list(reversed(pair.items()))
            for name, server in order:
                server_cpu, redis_cpu = process_tree_cpu_seconds(server.process.pid), redis_cpu_seconds(redis_url)
                run = wrk(server, path, args, args.duration)
                run.server_cpu_s = process_tree_cpu_seconds(server.process.pid) - server_cpu
                run.redis_cpu_s = redis_cpu_seconds(redis_url) - redis_cpu
                runs[name].append(run)
                if name == "collect":
                    accepted += run.accepted_metrics
                    in_flight += run.sent - run.requests
            print(
                f"round {number}: collect {runs['collect'][-1].rps:.1f} rps "
                f"(p99 {runs['collect'][-1].latency_ms('p99'):.1f} ms), "
                f"parse_only {runs['parse_only'][-1].rps:.1f} rps "
                f"(p99 {runs['parse_only'][-1].latency_ms('p99'):.1f} ms)",
                flush=True,
            )
        # Stopped before the drain, as the load is over: the worker gets the
        # machine to itself, and the counter files are complete.
        servers.close()
        server_accepted = server_accepted_metrics(collect)
        fallbacks = stream_fallbacks(collect)
        restarts = {name: worker_restarts(server) for name, server in pair.items()}
        before = run_json("counting", _STATE_SCRIPT, env, str(site.id))
        print(
            f"load over: {before['stream']} beacons in the stream, {before['rows']} metrics already stored; "
            f"draining with manage.py worker --once (load average {load_average()})",
            flush=True,
        )
        drained = drain(env, site)
    return Measurement(
        runs=runs,
        accepted_metrics=accepted,
        server_accepted_metrics=server_accepted,
        in_flight=in_flight,
        stream_entries=int(before["stream"]),
        fallbacks=fallbacks,
        restarts=restarts,
        drain=drained,
        redis_persistence=site.redis_persistence,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = measure_in_workdir("ingest.py", "perfhub-ingest-", lambda workdir: measure(args, workdir))
    if result is None:
        return 1

    collect_rps = statistics.median(run.rps for run in result.runs["collect"])
    parse_only_rps = statistics.median(run.rps for run in result.runs["parse_only"])
    ratio = collect_rps / parse_only_rps
    p99_ms = statistics.median(run.latency_ms("p99") for run in result.runs["collect"])
    # CPU time per answer: what a server and Redis spent on each, whatever
    # share of the machine they got. Less moved by other tenants of the
    # machine than the rates are, it tells a change's effect apart from the
    # machine's moods; cpu_ratio is the rate ratio the two would have with
    # the same CPU to spend (wrk's own share aside).
    collect_cpu_us = statistics.median(run.cpu_us for run in result.runs["collect"])
    parse_only_cpu_us = statistics.median(run.cpu_us for run in result.runs["parse_only"])
    redis_us = statistics.median(run.redis_cpu_s / max(run.requests, 1) * 1e6 for run in result.runs["collect"])
    # Each round's own ratio, of two runs seconds apart: their spread shows
    # how far the machine's load moved the figures.
    round_ratios = [
        collect.rps / parse_only.rps
        for collect, parse_only in zip(result.runs["collect"], result.runs["parse_only"], strict=True)
    ]
    state = result.drain.state
    stored = int(state["rows"])
    # The server's own count includes the answers still in flight when wrk
    # stopped, which wrk never read; either count above the rows is a loss.
    expected = max(result.accepted_metrics, result.server_accepted_metrics)
    lost = max(0, expected - stored)
    unaccounted = max(0, stored - expected)
    met = {"ratio": ratio >= TARGET_RATIO, "p99_ms": p99_ms <= TARGET_P99_MS, "lost": lost == 0}

    report_noise(result.runs)
    if any(result.restarts.values()):
        print(
            "gunicorn recycled workers (max_requests) during the run: "
            + ", ".join(f"{name} {count}" for name, count in result.restarts.items())
        )
    print(
        f"drained {result.stream_entries} beacons in {result.drain.seconds:.1f}s "
        f"({result.drain.runs} run(s) of manage.py worker --once, start-up included); "
        f"stream {state['stream']}, pending {state['pending']}, dead letters {state['dead_letters']}"
    )
    print(
        f"metrics: wrk saw {result.accepted_metrics} accepted, the server counted {result.server_accepted_metrics} "
        f"({result.in_flight} requests were in flight when wrk stopped), {stored} stored, "
        f"rollups hold {state['rollup_samples']} in {state['rollup_rows']} rows; lost {lost}"
        + (f", {unaccounted} stored but never counted accepted" if unaccounted else "")
        + (f"; {result.fallbacks} beacons went straight to the database" if result.fallbacks else "")
    )
    print(
        f"median: collect {collect_rps:.1f} rps, parse_only {parse_only_rps:.1f} rps, ratio {ratio:.3f} "
        f"(target >= {TARGET_RATIO:.2f}: {'met' if met['ratio'] else 'NOT met'}); "
        f"collect p99 {p99_ms:.1f} ms (target <= {TARGET_P99_MS:.0f}: {'met' if met['p99_ms'] else 'NOT met'}); "
        f"lost {lost} (target 0: {'met' if met['lost'] else 'NOT met'}); "
        f"round ratios {min(round_ratios):.3f}-{max(round_ratios):.3f}, median {statistics.median(round_ratios):.3f}"
    )
    print(
        f"CPU per answer (server and Redis): collect {collect_cpu_us:.0f} us (Redis {redis_us:.0f}), "
        f"parse_only {parse_only_cpu_us:.0f} us, cpu_ratio {parse_only_cpu_us / collect_cpu_us:.3f}"
    )
    print_result(
        {
            "collect_rps": round(collect_rps, 1),
            "parse_only_rps": round(parse_only_rps, 1),
            "ratio": round(ratio, 3),
            "p99_ms": round(p99_ms, 1),
            "accepted_metrics": result.accepted_metrics,
            "stored_metrics": stored,
            "lost": lost,
            "targets": {"ratio": TARGET_RATIO, "p99_ms": TARGET_P99_MS, "lost": 0},
            "targets_met": met,
            "server_accepted_metrics": result.server_accepted_metrics,
            "in_flight_at_stop": result.in_flight,
            "unaccounted_stored": unaccounted,
            "rollup_samples": int(state["rollup_samples"]),
            "stream_entries": result.stream_entries,
            "drain_s": round(result.drain.seconds, 1),
            "db_fallbacks": result.fallbacks,
            "worker_restarts": result.restarts,
            "redis_persistence": result.redis_persistence,
            "collect_p50_ms": round(statistics.median(r.latency_ms("p50") for r in result.runs["collect"]), 1),
            "parse_only_p99_ms": round(statistics.median(r.latency_ms("p99") for r in result.runs["parse_only"]), 1),
            "workers": args.workers,
            "threads": args.threads,
            "connections": args.connections,
            "rounds": args.rounds,
            "duration_s": args.duration,
            "collect_runs_rps": [round(run.rps, 1) for run in result.runs["collect"]],
            "parse_only_runs_rps": [round(run.rps, 1) for run in result.runs["parse_only"]],
            "collect_cpu_us": round(collect_cpu_us, 1),
            "collect_redis_cpu_us": round(redis_us, 1),
            "parse_only_cpu_us": round(parse_only_cpu_us, 1),
            "cpu_ratio": round(parse_only_cpu_us / collect_cpu_us, 3),
            "collect_runs_cpu_us": [round(run.cpu_us, 1) for run in result.runs["collect"]],
            "parse_only_runs_cpu_us": [round(run.cpu_us, 1) for run in result.runs["parse_only"]],
            "round_ratios": [round(value, 3) for value in round_ratios],
            "round_ratio_median": round(statistics.median(round_ratios), 3),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
