"""What response caching saves dashboards that poll the stats endpoints.

Serves PerfHub twice under gunicorn, with PerfHub's own gunicorn settings and
the same number of workers: once with the stats API response cache on
(PERFHUB_STATS_CACHE_SECONDS, 5 s by default) and once with it off
(PERFHUB_STATS_CACHE_SECONDS=0). Against each in turn, ten concurrent
pollers (threads) request the stats endpoints round-robin for --duration
seconds, each sending If-None-Match with the ETag it last saw for a path,
as a dashboard does:

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
are met, and 1 when the measurement itself went wrong (an unexpected status,
a refused token, a socket error, no path left to poll).
"""

import argparse
import functools
import http.client
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

# Run as a script, sys.path[0] is bench/: the repository goes first, so that
# `bench` is the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    BenchError,
    Server,
    machine_load,
    print_result,
    report_noise,
    serve,
    until_answered,
)
from bench.overhead import api_token, base_env  # noqa: E402

DEFAULT_PATHS = (
    "/api/v1/performance/cache/stats",
    "/api/v1/performance/database/stats",
    "/api/v1/performance/health",
    "/api/v1/performance/resilience",
)
TARGET_HIT_RATE = 0.9
TARGET_SPEEDUP = 5.0
# Health answers 503 when something is unhealthy: still a stats body.
OK_STATUSES = {200, 304, 503}


@dataclass
class PhaseRun:
    name: str
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    cache_states: Counter[str] = field(default_factory=Counter)
    by_path_ms: dict[str, list[float]] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.seconds

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies_ms)

    @property
    def hit_rate(self) -> float:
        counted = self.cache_states["hit"] + self.cache_states["miss"]
        return self.cache_states["hit"] / counted if counted else 0.0


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


def poll(
    server: Server, paths: list[str], headers: dict[str, str], args: argparse.Namespace, seconds: float
) -> PhaseRun:
    """args.pollers threads, each polling the paths round-robin with
    If-None-Match, until seconds have passed."""
    run = PhaseRun(name=server.name, seconds=seconds)
    lock = threading.Lock()
    errors: list[str] = []
    deadline = time.monotonic() + seconds

    def poller(offset: int) -> None:
        etags: dict[str, str] = {}
        number = offset
        while time.monotonic() < deadline and not errors:
            path = paths[number % len(paths)]
            number += 1
            request_headers = dict(headers)
            if path in etags:
                request_headers["If-None-Match"] = etags[path]
            start = time.perf_counter()
            try:
                status, response, _ = get(server, path, request_headers)
            except OSError as error:
                errors.append(f"GET {path}: {error}")
                return
            elapsed_ms = (time.perf_counter() - start) * 1000
            if status not in OK_STATUSES:
                errors.append(f"GET {path} answered {status}")
                return
            etag = response.getheader("ETag")
            if etag:
                etags[path] = etag
            with lock:
                run.latencies_ms.append(elapsed_ms)
                run.by_path_ms.setdefault(path, []).append(elapsed_ms)
                run.statuses[status] += 1
                run.cache_states[response.getheader("X-PerfHub-Cache") or "none"] += 1

    threads = [threading.Thread(target=poller, args=(n,)) for n in range(args.pollers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise BenchError(f"the {server.name} server: {errors[0]}\nserver log:\n{server.log_tail()}")
    if not run.latencies_ms:
        raise BenchError(f"no answer from the {server.name} server in {seconds}s")
    return run


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
                poll(server, paths, headers, args, args.warmup)
        for number in range(1, args.rounds + 1):
            for name, server in servers.items():
                run = poll(server, paths, headers, args, args.duration)
                runs[name].append(run)
                states = ", ".join(f"{state} {count}" for state, count in sorted(run.cache_states.items()))
                statuses = ", ".join(f"{status}: {count}" for status, count in sorted(run.statuses.items()))
                print(
                    f"round {number} {name}: {len(run.latencies_ms)} requests, {run.rps:.1f} rps, "
                    f"p50 {run.p50_ms:.2f} ms; status {statuses}; X-PerfHub-Cache {states}",
                    flush=True,
                )
                for path, latencies in sorted(run.by_path_ms.items()):
                    print(f"    {path}: p50 {statistics.median(latencies):.2f} ms over {len(latencies)}", flush=True)
    return runs, paths, skipped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="perfhub-bench-cache-") as workdir:
            runs, paths, skipped = measure(args, Path(workdir))
    except BenchError as error:
        print(f"cache.py: error: {error}", file=sys.stderr)
        return 1

    cached_p50 = statistics.median(run.p50_ms for run in runs["cached"])
    uncached_p50 = statistics.median(run.p50_ms for run in runs["uncached"])
    hit_rate = statistics.median(run.hit_rate for run in runs["cached"])
    speedup = uncached_p50 / cached_p50
    met = {"hit_rate": hit_rate >= TARGET_HIT_RATE, "speedup": speedup >= TARGET_SPEEDUP}
    if args.rounds > 1:
        report_noise(runs)
    cached_304 = sum(run.statuses[304] for run in runs["cached"]) / sum(len(run.latencies_ms) for run in runs["cached"])
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
