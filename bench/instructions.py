"""What PerfHub's self-instrumentation costs in CPU instructions per request.

bench/overhead.py measures throughput with wrk, which a busy machine skews.
This counts instructions instead, with valgrind's callgrind, which the load
of other processes does not change: the same view as overhead.py, the same
database and token preparation, the same two configurations (everything on
with tracing into an in-memory exporter through a BatchSpanProcessor, and
PERFHUB_INSTRUMENT=False without OTEL_*), but the requests go straight to
Django's WSGI handler in one process, without gunicorn or sockets.

    .venv/bin/python bench/instructions.py                       # SQLite, about 3 minutes
    .venv/bin/python bench/instructions.py --database-url postgres://postgres@127.0.0.1:5432/perfhub_bench

Each configuration runs twice under callgrind, with --requests and with
twice as many, after the same warm-up; the difference divided by --requests
is the cost of one request, start-up and warm-up cancelling out. gunicorn's
own per-request work is the same for both servers and is not counted, so
`ratio` (bare / instrumented instructions) is lower than the throughput
ratio overhead.py finds. Last line: {"instrumented_instructions": …,
"bare_instructions": …, "ratio": …, …}.
"""

import argparse
import gc
import io
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BASE_DIR, BenchError, measure_in_workdir, print_result  # noqa: E402

_TOTALS = re.compile(r"^(?:summary|totals):\s+(\d+)", re.MULTILINE)


def child(args: argparse.Namespace) -> None:
    """Runs under valgrind: --warmup requests, then --requests more."""
    exporter: Any = None
    if os.environ["PERFHUB_INSTRUMENT"] == "True":
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from bench.gunicorn_inmemory_tracing import CountingInMemorySpanExporter
        from perfhub.telemetry import configure_tracing

        exporter = CountingInMemorySpanExporter()
        configure_tracing(span_processor=BatchSpanProcessor(exporter))
    from perfhub.wsgi import application

    headers = {"HTTP_AUTHORIZATION": f"Bearer {os.environ['BENCH_TOKEN']}"}
    if args.traceparent:
        headers["HTTP_TRACEPARENT"] = args.traceparent

    def request() -> None:
        environ = {
            "REQUEST_METHOD": "GET",
            "SCRIPT_NAME": "",
            "PATH_INFO": args.path,
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "127.0.0.1:8000",
            "HTTP_USER_AGENT": "wrk",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            **headers,
        }
        status: list[str] = []

        def start_response(line: str, headers: Any, exc_info: Any = None) -> Any:
            status.append(line)
            return lambda data: None

        body = application(environ, start_response)
        b"".join(body)
        close = getattr(body, "close", None)
        if close is not None:  # as a WSGI server must
            close()
        if not status[0].startswith("200"):
            raise SystemExit(f"GET {args.path} answered {status[0]}")

    for _ in range(args.warmup):
        request()
    # As a gunicorn worker does after loading the app (perfhub/gunicorn_conf.py):
    # otherwise a full collection of the ~120,000 objects loaded, a few hundred
    # million instructions, lands in one run's requests and not the other's.
    gc.collect()
    gc.freeze()
    for _ in range(args.requests):
        request()
    if exporter is not None:
        from perfhub.telemetry import shutdown_tracing

        shutdown_tracing()
        print(f"spans exported: {exporter.exported}", file=sys.stderr)


def instructions(env: dict[str, str], args: argparse.Namespace, requests: int, out: Path) -> int:
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--path",
        args.path,
        "--warmup",
        str(args.warmup),
        "--requests",
        str(requests),
    ]
    if args.traceparent:
        command += ["--traceparent", args.traceparent]
    # One hash seed for every run: set and dict layouts, and so the work done,
    # are then the same from one run to the next. One OpenBLAS thread:
    # numpy (imported by apps.vitals) starts idle BLAS threads that callgrind,
    # which runs threads in turn, counted as tens of thousands of
    # instructions per request, more in one run than in another.
    env = {**env, "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise BenchError(f"callgrind run failed:\n{result.stderr[-3000:]}")
    totals = _TOTALS.search(out.read_text())
    if totals is None:
        raise BenchError(f"no totals in {out}")
    return int(totals.group(1))


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from bench.overhead import api_token, base_env, sampler_env

    env = base_env(argparse.Namespace(workers=1, database_url=args.database_url, redis_url=args.redis_url), workdir)
    per_request: dict[str, float] = {}
    with api_token(env, revoke=bool(args.database_url)) as secret:
        for name, instrument in (("instrumented", "True"), ("bare", "False")):
            if name not in args.configurations.split(","):
                continue
            run_env = {
                **env,
                "BENCH_TOKEN": secret,
                "PERFHUB_INSTRUMENT": instrument,
                "PROMETHEUS_MULTIPROC_DIR": str(workdir / f"{name}-prometheus"),
            }
            if name == "instrumented":
                run_env.update(sampler_env(args))
            (workdir / f"{name}-prometheus").mkdir()
            counts = [
                instructions(run_env, args, n, workdir / f"{name}-{n}.callgrind")
                for n in (args.requests, 2 * args.requests)
            ]
            per_request[name] = (counts[1] - counts[0]) / args.requests
            print(f"{name}: {per_request[name]:,.0f} instructions per request", flush=True)
            if args.keep:
                for n in (args.requests, 2 * args.requests):
                    kept = Path(args.keep) / f"{name}-{n}.callgrind"
                    kept.write_bytes((workdir / f"{name}-{n}.callgrind").read_bytes())
    return per_request


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", default="/api/v1/whoami")
    parser.add_argument("--requests", type=int, default=200, help="requests counted (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=100, help="requests before (default: %(default)s)")
    parser.add_argument("--database-url", default="")
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--traces-sampler", default="", help="OTEL_TRACES_SAMPLER (default: unset, PerfHub's)")
    parser.add_argument("--traces-sampler-arg", default="", help="OTEL_TRACES_SAMPLER_ARG (default: unset, 0.1)")
    parser.add_argument("--traceparent", default="", help="sent with every request, e.g. a sampled one")
    parser.add_argument("--configurations", default="instrumented,bare", help="which to measure (default: %(default)s)")
    parser.add_argument("--keep", default="", help="a directory to copy the callgrind files to")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    result = measure_in_workdir("instructions.py", "perfhub-instructions-", lambda workdir: measure(args, workdir))
    if result is None:
        return 1
    if len(result) < 2:
        print_result({f"{name}_instructions": round(count) for name, count in result.items()})
        return 0
    ratio = result["bare"] / result["instrumented"]
    print(f"bare / instrumented instructions: {ratio:.3f}")
    print_result(
        {
            "instrumented_instructions": round(result["instrumented"]),
            "bare_instructions": round(result["bare"]),
            "ratio": round(ratio, 3),
            "path": args.path,
            "requests": args.requests,
            "traceparent": bool(args.traceparent),
            "traces_sampler": args.traces_sampler or "default",
            "traces_sampler_arg": args.traces_sampler_arg or "default",
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
