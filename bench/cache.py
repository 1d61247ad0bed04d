"""What response caching saves dashboards that poll the stats endpoints.

Serves PerfHub twice under gunicorn, with PerfHub's own gunicorn settings and
the same number of workers: once with the stats API response cache on
(PERFHUB_STATS_CACHE_SECONDS, 5 s by default) and once with it off
(PERFHUB_STATS_CACHE_SECONDS=0). Against each in turn, ten concurrent
pollers (wrk, one connection per thread, bench/cache.lua) request the stats
endpoints round-robin for --duration seconds, each sending If-None-Match
with the ETag it last saw for a path, as a dashboard does:

    .venv/bin/python bench/cache.py
    .venv/bin/python bench/cache.py --database-url postgres://postgres@127.0.0.1:5432/perfhub_cache \\
        --redis-url redis://127.0.0.1:6379/5

Paths that answer 404 (endpoints not built in this version) are skipped
with a note. The database is prepared as bench/overhead.py does it (migrate,
a staff user and a read-scope API token, revoked at the end on a
--database-url database); the Redis database is not flushed.

The last line printed is one JSON object, {"hit_rate": …, "cached_p50_ms": …,
"uncached_p50_ms": …, "speedup": …, …}: hit_rate is the share of the cached
server's answers that came from the response cache (X-PerfHub-Cache: hit,
304s included), speedup is uncached_p50_ms / cached_p50_ms. Targets:
hit_rate >= 0.9 and speedup >= 5. The exit status is 0 whether or not they
are met, and 1 when the measurement itself went wrong (wrk missing, an
unexpected status, a refused token, a socket error, no path left to poll).
"""

import argparse
import functools
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

# Run as a script, sys.path[0] is bench/: the repository goes first, so that
# `bench` is the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    BASE_DIR,
    BenchError,
    Server,
    machine_load,
    measure_in_workdir,
    print_result,
    report_noise,
    serve,
    until_answered,
)
from bench.overhead import api_token, base_env  # noqa: E402

# The endpoints dashboards poll for statistics. The health endpoint is left
# out: it runs its checks on every request (no-store), as a health check must.
DEFAULT_PATHS = (
    "/api/v1/performance/cache/stats",
    "/api/v1/performance/database/stats",
    "/api/v1/performance/resilience",
)
TARGET_HIT_RATE = 0.9
TARGET_SPEEDUP = 5.0
WRK_SCRIPT = BASE_DIR / "bench" / "cache.lua"
_WRK_LINE = re.compile(r"^cache-wrk: (\{.*\})$", re.MULTILINE)
# Health answers 503 when something is unhealthy: still a stats body.
OK_STATUSES = {200, 304, 503}


@dataclass
class PhaseRun:
    name: str
    seconds: float
    requests: int
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int]
    states: dict[str, int]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def hit_rate(self) -> float:
        counted = self.states.get("hit", 0) + self.states.get("miss", 0)
        return self.states.get("hit", 0) / counted if counted else 0.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--paths",
        default=",".join(DEFAULT_PATHS),
        help="comma-separated stats endpoints to poll (default: %(default)s)",
    )
    parser.add_argument("--pollers", type=int, default=10, help="concurrent pollers (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per server (default: %(default)s)")
    parser.add_argument("--duration", type=int, default=20, help="seconds of polling per run (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=1, help="cached/uncached rounds (default: %(default)s)")
    parser.add_argument(
        "--warmup", type=int, default=3, help="seconds of unmeasured polling first (default: %(default)s)"
    )
    parser.add_argument(
        "--cache-seconds", type=int, default=5, help="PERFHUB_STATS_CACHE_SECONDS when on (default: %(default)s)"
    )
    parser.add_argument(
        "--database-url",
        default="",
        help="DATABASE_URL for both servers, migrated by the bench (default: SQLite in a temporary directory)",
    )
    parser.add_argument("--redis-url", default="", help="REDIS_URL for both servers (default: local-memory cache)")
    args = parser.parse_args(argv)
    args.paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if not args.paths or any(not p.startswith("/") for p in args.paths):
        parser.error("--paths must be a comma-separated list of paths starting with /")
    for name in ("pollers", "workers", "duration", "rounds", "cache_seconds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    return args


def get(server: Server, path: str, headers: dict[str, str]) -> tuple[int, http.client.HTTPResponse, bytes]:
    # A new connection per request, as gunicorn's sync workers close each one.
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        return response.status, response, body
    finally:
        connection.close()


def pollable_paths(server: Server, paths: list[str], headers: dict[str, str]) -> list[str]:
    """The paths that exist; one checked request each."""
    kept = []
    for path in paths:
        status, response, _ = until_answered(server, functools.partial(get, server, path, headers), timeout=60)
        if status == 404:
            print(f"note: GET {path} answered 404 (not in this version of PerfHub); skipped", flush=True)
            continue
        if status in {401, 403}:
            raise BenchError(f"GET {path} answered {status}: the bench's read-scope API token was refused.")
        if status not in OK_STATUSES:
            raise BenchError(f"GET {path} answered {status} on the {server.name} server.\n{server.log_tail()}")
        if response.getheader("X-PerfHub-Cache") is None:
            print(f"note: GET {path} is not response-cached (no X-PerfHub-Cache header)", flush=True)
        kept.append(path)
    if not kept:
        raise BenchError("none of --paths exists on this server.")
    return kept


def poll(server: Server, paths: list[str], secret: str, args: argparse.Namespace, seconds: int) -> PhaseRun:
    """wrk with one connection per poller (see bench/cache.lua), polling the
    paths round-robin with If-None-Match, for seconds."""
    command = [
        "wrk",
        f"-t{args.pollers}",
        f"-c{args.pollers}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_SCRIPT),
        server.url("/"),
        "--",
        *paths,
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        env={**os.environ, "PERFHUB_BENCH_TOKEN": secret},
    )
    output = result.stdout + result.stderr
    line = _WRK_LINE.search(output)
    if result.returncode != 0 or line is None:
        raise BenchError(f"{' '.join(command)} failed:\n{output}")
    data = json.loads(line.group(1))
    statuses = {int(code): count for code, count in data["statuses"].items()}
    errors = {name: count for name, count in data["errors"].items() if count and name != "status"}
    if set(statuses) - OK_STATUSES or errors:
        raise BenchError(
            f"wrk saw unexpected answers or socket errors from the {server.name} server: statuses {statuses}, "
            f"errors {errors}\nserver log:\n{server.log_tail()}"
        )
    return PhaseRun(
        name=server.name,
        seconds=data["duration_us"] / 1e6,
        requests=int(data["requests"]),
        p50_ms=data["latency_us"]["p50"] / 1000,
        p99_ms=data["latency_us"]["p99"] / 1000,
        statuses=statuses,
        states={str(state): int(count) for state, count in data["states"].items()},
    )


def measure(args: argparse.Namespace, workdir: Path) -> tuple[dict[str, list[PhaseRun]], list[str], list[str]]:
    env = base_env(args, workdir / "data")
    runs: dict[str, list[PhaseRun]] = {"cached": [], "uncached": []}
    with ExitStack() as stack:
        secret = stack.enter_context(api_token(env, revoke=bool(args.database_url)))
        headers = {"Authorization": f"Bearer {secret}", "Accept": "application/json"}
        servers = {
            "cached": stack.enter_context(
                serve("cached", env={**env, "PERFHUB_STATS_CACHE_SECONDS": str(args.cache_seconds)}, workdir=workdir)
            ),
            "uncached": stack.enter_context(
                serve("uncached", env={**env, "PERFHUB_STATS_CACHE_SECONDS": "0"}, workdir=workdir)
            ),
        }
        paths = pollable_paths(servers["cached"], args.paths, headers)
        pollable_paths(servers["uncached"], paths, headers)
        skipped = [path for path in args.paths if path not in paths]
        print(
            f"polling {', '.join(paths)}; {args.pollers} pollers sending If-None-Match; gunicorn, {args.workers} "
            f"workers per server; {args.rounds} round(s) of {args.duration}s; response cache {args.cache_seconds}s "
            f"vs off; database: {'--database-url' if args.database_url else 'SQLite in a temporary data directory'}; "
            f"cache: {'--redis-url' if args.redis_url else 'local memory'}; {machine_load()}",
            flush=True,
        )
        if args.warmup:
            for server in servers.values():
                poll(server, paths, secret, args, args.warmup)
        # cached/uncached in odd rounds, uncached/cached in even ones, so
        # that neither always runs first (or in the machine's quieter moment).
        order = list(servers.items())
        for number in range(1, args.rounds + 1):
            for name, server in order if number % 2 else order[::-1]:
                run = poll(server, paths, secret, args, args.duration)
                runs[name].append(run)
                states = ", ".join(f"{state} {count}" for state, count in sorted(run.states.items()))
                statuses = ", ".join(f"{status}: {count}" for status, count in sorted(run.statuses.items()))
                print(
                    f"round {number} {name}: {run.requests} requests, {run.rps:.1f} rps, p50 {run.p50_ms:.2f} ms, "
                    f"p99 {run.p99_ms:.2f} ms; status {statuses}; X-PerfHub-Cache {states}",
                    flush=True,
                )
    return runs, paths, skipped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = measure_in_workdir("cache.py", "perfhub-bench-cache-", lambda workdir: measure(args, workdir))
    if result is None:
        return 1
    runs, paths, skipped = result

    cached_p50 = statistics.median(run.p50_ms for run in runs["cached"])
    uncached_p50 = statistics.median(run.p50_ms for run in runs["uncached"])
    hit_rate = statistics.median(run.hit_rate for run in runs["cached"])
    speedup = uncached_p50 / cached_p50
    met = {"hit_rate": hit_rate >= TARGET_HIT_RATE, "speedup": speedup >= TARGET_SPEEDUP}
    if args.rounds > 1:
        report_noise(runs)
    cached_304 = sum(run.statuses.get(304, 0) for run in runs["cached"]) / sum(run.requests for run in runs["cached"])
    print(
        f"hit rate {hit_rate:.3f} (target >= {TARGET_HIT_RATE}: {'met' if met['hit_rate'] else 'NOT met'}); "
        f"p50 cached {cached_p50:.2f} ms, uncached {uncached_p50:.2f} ms, speedup {speedup:.1f}x "
        f"(target >= {TARGET_SPEEDUP:.0f}: {'met' if met['speedup'] else 'NOT met'})"
    )
    print_result(
        {
            "hit_rate": round(hit_rate, 4),
            "cached_p50_ms": round(cached_p50, 2),
            "uncached_p50_ms": round(uncached_p50, 2),
            "speedup": round(speedup, 2),
            "targets": {"hit_rate": TARGET_HIT_RATE, "speedup": TARGET_SPEEDUP},
            "targets_met": met,
            "cached_rps": round(statistics.median(run.rps for run in runs["cached"]), 1),
            "uncached_rps": round(statistics.median(run.rps for run in runs["uncached"]), 1),
            "cached_not_modified_share": round(cached_304, 4),
            "paths": paths,
            "skipped_paths": skipped,
            "pollers": args.pollers,
            "workers": args.workers,
            "rounds": args.rounds,
            "duration_s": args.duration,
            "cache_seconds": args.cache_seconds,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
