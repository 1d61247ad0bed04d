"""Where a beacon's CPU goes, in one process, beside ingest.py's baseline.

bench/ingest.py measures the endpoint under gunicorn and wrk, where the
machine's own load moves a run's ratio by about ±0.04. This calls
perfhub.wsgi.application directly, each configuration in a process of its
own, and reads that process's CPU time (user and system) around --requests
beacons, best of --repeats:

- **collect**: the endpoint as deployed (perfhub.settings, instrumentation
  and the JSON request log on, PostgreSQL and Redis), each beacon appended
  to the Redis stream;
- **collect_without_append**: the same, with the stream's round trip
  (apps.vitals.stream._append_round_trip) replaced by one that sends
  nothing: the endpoint's own Python, beacons stored nowhere (an experiment
  only this bench makes);
- **collect_without_append_then_round_trip**: as the one before, then, after
  each request, one real XADD of a stream entry of the same size to a
  scratch key: the same work as collect, the round trip outside the
  request;
- **round_trip**: that XADD alone, in a loop;
- **parse_only**: bench/parse_only.py's view, ingest.py's baseline.

Beacons are those of vitals_demo (five metrics with attribution, as rum.js
sends them), built before the clock starts, each metric with an id of its
own. Like ingest.py, the bench recreates its site "bench-ingest" and FLUSHES
the Redis database it is given.

    .venv/bin/python bench/beacon_cpu.py --database-url postgres://postgres@127.0.0.1:5432/perfhub_ingest

The last line printed is one JSON object, {"collect_us": …, "parse_only_us":
…, "cpu_ratio": …, "collect_without_append_us": …, "round_trip_us": …, …}
in microseconds of CPU per beacon; `cpu_ratio` is parse_only's over
collect's. There is no target: the figures say what ingest.py's ratio is
made of. The exit status is 1 when a measurement went wrong.
"""

import argparse
import gc
import io
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BenchError, machine_load, print_result, run_python  # noqa: E402

CONFIGURATIONS = (
    "collect",
    "collect_without_append",
    "collect_without_append_then_round_trip",
    "round_trip",
    "parse_only",
)
SCRATCH_STREAM = b"perfhub:bench:beacon-cpu"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--database-url",
        default="postgres://postgres@127.0.0.1:5432/perfhub_ingest",
        help="PostgreSQL database, migrated by the bench (default: %(default)s)",
    )
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/9",
        help="Redis database; FLUSHED at the start (default: %(default)s)",
    )
    parser.add_argument("--requests", type=int, default=3000, help="beacons per timed run (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per configuration (default: %(default)s)")
    parser.add_argument("--child", choices=CONFIGURATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.requests < 1 or args.repeats < 1:
        parser.error("--requests and --repeats must be at least 1")
    return args


def beacon_bodies(count: int) -> list[bytes]:
    """``count`` beacons as rum.js sends them, no metric id repeated."""
    from apps.vitals.management.commands.vitals_demo import Command as Demo

    rng = random.Random(7)
    demo = Demo()
    bodies = []
    for serial in range(count):
        beacon = demo._beacon(
            rng,
            at=datetime.now(UTC),
            path=f"/products/{rng.randint(1, 500)}",
            factor=1.0,
            release="2026.11.1-bench",
            sample_rate=1.0,
        )
        for number, metric in enumerate(beacon["metrics"]):
            metric["id"] = f"{metric['id'].rsplit('-', 1)[0]}-{serial * 10 + number:013d}"
        bodies.append(json.dumps(beacon).encode())
    return bodies


def child(args: argparse.Namespace) -> None:
    """Runs one configuration, Django set up by the parent's environment;
    prints the best run's CPU and wall microseconds per beacon."""
    import django

    django.setup()
    from apps.vitals import stream

    real_round_trip = stream._append_round_trip
    entry = b"x" * 1500  # about a beacon's stream entry

    def scratch_round_trip() -> None:
        real_round_trip([(b"XADD", SCRATCH_STREAM, b"*", b"r", entry)])

    if args.child == "round_trip":
        step: Callable[[], None] = scratch_round_trip
    else:
        if args.child.startswith("collect_without_append"):
            # Every reply a caller reads: the XADD's, or the count script's
            # counts (zero: far below every limit).
            stream._append_round_trip = lambda commands: [1] * (len(commands) - 1) + [[0] * 8]
        step = _beacon_step(args, after=scratch_round_trip if args.child.endswith("then_round_trip") else None)
    step()  # the first request loads what the others reuse
    gc.freeze()
    cpu, wall = min(_seconds(step, args.requests) for _ in range(args.repeats))
    real_round_trip([(b"DEL", SCRATCH_STREAM)])
    print(json.dumps({"us": round(cpu / args.requests * 1e6, 1), "wall_us": round(wall / args.requests * 1e6, 1)}))


def _beacon_step(args: argparse.Namespace, *, after: Callable[[], None] | None) -> Callable[[], None]:
    from perfhub.wsgi import application

    bodies = iter(beacon_bodies(args.requests * args.repeats + 1))

    def step() -> None:
        body = next(bodies)
        environ = {
            "REQUEST_METHOD": "POST",
            "SCRIPT_NAME": "",
            "PATH_INFO": "/api/v1/vitals/collect",
            "QUERY_STRING": f"key={args.key}",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "127.0.0.1:8000",
            "HTTP_ORIGIN": "https://shop.example.com",
            "HTTP_USER_AGENT": (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
            ),
            "CONTENT_TYPE": "text/plain;charset=UTF-8",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        status: list[str] = []
        answer = b"".join(application(environ, lambda line, headers, exc_info=None: status.append(line)))
        if not status[0].startswith("202"):
            raise BenchError(f"a beacon was answered {status[0]}: {answer[:200]!r}")
        if after is not None:
            after()

    return step


def _seconds(step: Callable[[], None], count: int) -> tuple[float, float]:
    """CPU and wall time of ``count`` steps."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(count):
        step()
    return time.process_time() - cpu, time.perf_counter() - wall


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    # ingest.py's environment and preparation: the same settings, site and
    # raised rate limits (all beacons come from one address).
    from bench.ingest import base_env, prepare

    env = base_env(argparse.Namespace(database_url=args.database_url, workers=1), workdir / "data", args.redis_url)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(workdir / "prometheus")
    (workdir / "prometheus").mkdir()
    site = prepare(env)
    figures: dict[str, float] = {}
    wall: dict[str, float] = {}
    for configuration in CONFIGURATIONS:
        child_env = dict(env)
        if configuration == "parse_only":
            child_env["DJANGO_SETTINGS_MODULE"] = "bench.parse_only"
        command = [
            str(Path(__file__)),
            f"--child={configuration}",
            f"--key={site.key}",
            f"--requests={args.requests}",
            f"--repeats={args.repeats}",
        ]
        output = run_python(configuration, command, child_env, timeout=900)
        measured = json.loads(output.strip().splitlines()[-1])
        figures[configuration], wall[configuration] = float(measured["us"]), float(measured["wall_us"])
        print(
            f"  {configuration}: {figures[configuration]:.1f} us of CPU per beacon ({wall[configuration]:.1f} us wall)",
            flush=True,
        )
    without = figures["collect_without_append"]
    return {
        "collect_us": figures["collect"],
        "parse_only_us": figures["parse_only"],
        "cpu_ratio": round(figures["parse_only"] / figures["collect"], 3),
        "collect_without_append_us": without,
        "collect_without_append_then_round_trip_us": figures["collect_without_append_then_round_trip"],
        "round_trip_us": figures["round_trip"],
        "round_trip_wall_us": wall["round_trip"],
        # What the round trip adds to a beacon inside the request, and
        # after it: more than the round trip alone when the process's
        # other work runs slower for it.
        "round_trip_in_request_us": round(figures["collect"] - without, 1),
        "round_trip_after_request_us": round(figures["collect_without_append_then_round_trip"] - without, 1),
        "requests": args.requests,
        "repeats": args.repeats,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0
    print(f"beacon CPU per configuration, best of {args.repeats} x {args.requests} ({machine_load()})", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="perfhub-beacon-cpu-") as workdir:
            result = measure(args, Path(workdir))
    except BenchError as error:
        print(f"beacon_cpu.py: error: {error}", file=sys.stderr)
        return 1
    print_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
