"""What PerfHub's self-instrumentation costs in throughput.

Serves one view twice under gunicorn, with PerfHub's own gunicorn settings:
once with everything on (Prometheus middleware and backends, the request
log, Server-Timing, and OpenTelemetry tracing into an in-memory exporter, see
bench/gunicorn_inmemory_tracing.py) and once with all of it off
(PERFHUB_INSTRUMENT=False, no OTEL_*). wrk loads them in turn, A/B/A/B, and
the median requests per second of each are compared:

    .venv/bin/python bench/overhead.py

The default view, GET /api/v1/whoami, is the simplest JSON API view, and
like every API view it needs a token. So the bench first prepares a database
of its own (a fresh temporary data directory with SQLite, unless
--database-url names one): it migrates it, creates a staff user and a
read-scope API token, and sends the token with every request to both
servers.

The last line printed is one JSON object, {"instrumented_rps": …,
"bare_rps": …, "ratio": …, …}. The target is a ratio of at least 0.90; the
exit status is 0 whether or not it is met, and 1 when the measurement itself
went wrong (a non-2xx answer, a socket error, tracing found off).
"""

import argparse
import http.client
import re
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

# Run as a script, sys.path[0] is bench/: the repository goes first, so that
# `bench` is the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402
from bench.common import (  # noqa: E402
    BASE_DIR,
    GUNICORN_CONF,
    SERVER_ENV_DROPPED,
    BenchError,
    Server,
    check_load_options,
    inherited_env,
    machine_load,
    measure_in_workdir,
    print_result,
    report_noise,
    serve,
    until_answered,
)

TARGET_RATIO = 0.90

# The staff user that owns the bench's tokens; on a --database-url database
# it is reused from one run to the next.
BENCH_USERNAME = "perfhub-bench"

# Run with the project's settings, in a subprocess, so that this process
# never configures Django itself. Printed on a line of its own, the secret is
# the one thing the bench reads back.
_CREATE_SCRIPT = f"""
import django
django.setup()
from django.contrib.auth.models import User
from apps.core.models import ApiToken
from apps.core.services import api_token_create
user, _ = User.objects.get_or_create(username={BENCH_USERNAME!r})
user.is_staff, user.is_active, user.is_superuser = True, True, False
user.set_unusable_password()
user.save()
_, secret = api_token_create(user=user, name="bench/overhead.py", scope=ApiToken.Scope.READ)
print("token:", secret)
"""

# On a --database-url database the token would outlive the run, a working
# credential nobody holds; it is revoked when the run ends.
_REVOKE_SCRIPT = """
import sys
import django
django.setup()
from apps.core.selectors import api_token_for_secret
from apps.core.services import api_token_revoke
token = api_token_for_secret(secret=sys.stdin.read().strip())
if token is not None:
    api_token_revoke(token=token)
"""
_TOKEN_LINE = re.compile(r"^token: (phk_\S+)$", re.MULTILINE)


@dataclass
class WrkRun:
    rps: float
    requests: int


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--path",
        default="/api/v1/whoami",
        help="the view to load, sent a read-scope API token (default: %(default)s)",
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per server (default: %(default)s)")
    # Many short rounds rather than a few long ones: on a shared machine the
    # load of others drifts over tens of seconds, and a round's two runs,
    # seconds apart, meet nearly the same share of it.
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=12, help="A/B rounds (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of unmeasured load first (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default: %(default)s)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default: %(default)s)")
    parser.add_argument(
        "--database-url",
        default="",
        help="DATABASE_URL for both servers, migrated by the bench (default: SQLite in a temporary directory)",
    )
    parser.add_argument("--redis-url", default="", help="REDIS_URL for both servers (default: local-memory cache)")
    parser.add_argument(
        "--traces-sampler",
        default="",
        help="OTEL_TRACES_SAMPLER for the instrumented server (default: unset, PerfHub's production default, "
        "parentbased_traceidratio)",
    )
    parser.add_argument(
        "--traces-sampler-arg",
        default="",
        help="OTEL_TRACES_SAMPLER_ARG for the instrumented server (default: unset, 0.1)",
    )
    args = parser.parse_args(argv)
    if not args.path.startswith("/"):
        parser.error("--path must start with /")
    check_load_options(parser, args)
    return args


def base_env(args: argparse.Namespace, data_dir: Path) -> dict[str, str]:
    # Variables that would make the two servers differ in more than the
    # instrumentation, or point them somewhere the bench did not choose.
    env = inherited_env(SERVER_ENV_DROPPED)
    env.update(
        # Fresh for every run: the SQLite database (unless --database-url),
        # the generated secret key, nothing left over from an earlier run.
        PERFHUB_DATA_DIR=str(data_dir),
        DJANGO_SETTINGS_MODULE="perfhub.settings",
        PERFHUB_WEB_WORKERS=str(args.workers),
        DEBUG="False",
        # As deploy/k8s/configmap.yaml runs it, so that the request log is
        # measured in the format production writes.
        PERFHUB_LOG_JSON="True",
        PERFHUB_LOG_LEVEL="INFO",
    )
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    if args.redis_url:
        env["REDIS_URL"] = args.redis_url
    return env


def sampler_env(args: argparse.Namespace) -> dict[str, str]:
    """The head sampler of the instrumented server: unset, it is the one
    production runs with (perfhub.telemetry.DEFAULT_SAMPLER)."""
    env = {}
    if args.traces_sampler:
        env["OTEL_TRACES_SAMPLER"] = args.traces_sampler
    if args.traces_sampler_arg:
        env["OTEL_TRACES_SAMPLER_ARG"] = args.traces_sampler_arg
    return env


def run_python(name: str, command: list[str], env: dict[str, str], *, stdin: str = "") -> str:
    """Run the project's Python in the repository with the bench's
    environment, uninstrumented; return its standard output."""
    return common.run_python(name, command, {**env, "PERFHUB_INSTRUMENT": "False"}, stdin=stdin)


def prepare_database(env: dict[str, str]) -> str:
    """Migrate the servers' database and create a read-scope API token for a
    staff user; return the token's secret."""
    run_python("manage.py migrate", ["manage.py", "migrate", "--noinput"], env)
    output = run_python("creating the API token", ["-c", _CREATE_SCRIPT], env)
    secret = _TOKEN_LINE.search(output)
    if secret is None:
        raise BenchError(f"creating the API token printed no token:\n{output}")
    return secret.group(1)


@contextmanager
def api_token(env: dict[str, str], *, revoke: bool) -> Iterator[str]:
    secret = prepare_database(env)
    try:
        yield secret
    finally:
        if revoke:
            try:
                run_python("revoking the API token", ["-c", _REVOKE_SCRIPT], env, stdin=secret)
            except BenchError as error:
                # The figures are still good; say so and leave the token.
                print(f"overhead.py: warning: {error}", file=sys.stderr)


def get(server: Server, path: str, headers: dict[str, str]) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        return response
    finally:
        connection.close()


def first_answer(
    server: Server, path: str, headers: dict[str, str], *, timeout: float = 60.0
) -> http.client.HTTPResponse:
    """Wait until a worker has loaded the app, and return its answer."""
    return until_answered(server, lambda: get(server, path, headers), timeout=timeout)


def check_answer(server: Server, path: str, response: http.client.HTTPResponse, *, instrumented: bool) -> None:
    """One request before the load: the path must exist, and each server must
    really be the configuration it is named after."""
    if response.status == 404:
        raise BenchError(f"GET {path} answered 404: no such view. Pass --path with an existing one, e.g. /login/.")
    if response.status in {401, 403}:
        raise BenchError(
            f"GET {path} answered {response.status} on the {server.name} server: the bench's read-scope API token "
            "was refused. Does the view need more than a read token?"
        )
    if response.status != 200:
        raise BenchError(f"GET {path} answered {response.status} on the {server.name} server, not 200.")
    for header in ("Server-Timing", "X-Request-ID"):
        if (response.getheader(header) is not None) != instrumented:
            state = "missing from" if instrumented else "present on"
            raise BenchError(f"{header} is {state} the {server.name} server's answer.")


_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_REQUESTS = re.compile(r"^\s*(\d+) requests in ", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def wrk(server: Server, path: str, headers: dict[str, str], args: argparse.Namespace, duration: int) -> WrkRun:
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration}s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    command.append(server.url(path))
    result = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    output = result.stdout + result.stderr
    rps, requests = _RPS.search(output), _REQUESTS.search(output)
    if result.returncode != 0 or rps is None or requests is None:
        # The command without its -H values: they hold the token.
        raise BenchError(f"wrk {' '.join(command[1:4])} {server.url(path)} failed:\n{output}")
    # wrk counts these in its rate; a fast error page would pass for speed.
    non_2xx = _NON_2XX.search(output)
    socket_errors = _SOCKET_ERRORS.search(output)
    if non_2xx or (socket_errors and any(int(count) for count in socket_errors.groups())):
        raise BenchError(f"wrk saw errors from the {server.name} server:\n{output}\nserver log:\n{server.log_tail()}")
    return WrkRun(rps=float(rps.group(1)), requests=int(requests.group(1)))


def spans_exported(server: Server) -> int:
    """The sum of the counts each worker logs at exit (see
    bench/gunicorn_inmemory_tracing.py)."""
    counts = re.findall(r"bench tracing: worker \d+ exported (\d+) spans", server.log.read_text(errors="replace"))
    return sum(int(count) for count in counts)


@dataclass
class Measurement:
    runs: dict[str, list[WrkRun]]
    requests: dict[str, int]
    spans: int


def measure(args: argparse.Namespace, workdir: Path) -> Measurement:
    env = base_env(args, workdir / "data")
    runs: dict[str, list[WrkRun]] = {"instrumented": [], "bare": []}
    requests = {"instrumented": 0, "bare": 0}
    with ExitStack() as servers:
        # One database and one token for both servers. The token's
        # last_used_at is written at most once a minute, so the load stays
        # read-only (apps.core.services.LAST_USED_RESOLUTION).
        secret = servers.enter_context(api_token(env, revoke=bool(args.database_url)))
        headers = {"Authorization": f"Bearer {secret}"}
        instrumented = servers.enter_context(
            serve(
                "instrumented",
                config=BASE_DIR / "bench" / "gunicorn_inmemory_tracing.py",
                env={**env, "PERFHUB_INSTRUMENT": "True", **sampler_env(args)},
                workdir=workdir,
            )
        )
        bare = servers.enter_context(
            serve(
                "bare",
                config=GUNICORN_CONF,
                env={**env, "PERFHUB_INSTRUMENT": "False"},
                workdir=workdir,
            )
        )
        pair = {"instrumented": instrumented, "bare": bare}
        content_type = ""
        for name, server in pair.items():
            answer = first_answer(server, args.path, headers)
            check_answer(server, args.path, answer, instrumented=name == "instrumented")
            content_type = answer.getheader("Content-Type", "")
            requests[name] += 1

        print(
            f"GET {args.path} ({content_type}); gunicorn, {args.workers} workers per server; "
            f"wrk -t{args.threads} -c{args.connections}; {args.rounds} rounds of {args.duration}s; "
            f"database: {'--database-url' if args.database_url else 'SQLite in a temporary data directory'}; "
            f"cache: {'--redis-url' if args.redis_url else 'local memory'}; "
            f"{machine_load()}",
            flush=True,
        )
        # Only one worker of each server is known to be up; the warm-up also
        # gives the others time to load the app before anything is measured.
        if args.warmup:
            for name, server in pair.items():
                requests[name] += wrk(server, args.path, headers, args, args.warmup).requests
        for number in range(1, args.rounds + 1):
            # A/B, then B/A: whichever runs second in a round does not
            # always meet the same moment of the machine's load.
            order = list(pair.items()) if number % 2 else list(reversed(pair.items()))
            for name, server in order:
                run = wrk(server, args.path, headers, args, args.duration)
                runs[name].append(run)
                requests[name] += run.requests
            print(
                f"round {number}: instrumented {runs['instrumented'][-1].rps:.1f} rps, "
                f"bare {runs['bare'][-1].rps:.1f} rps",
                flush=True,
            )
        if not any(instrumented.multiproc_dir.glob("counter_*.db")):
            raise BenchError("the instrumented server wrote no Prometheus samples.")
    # Stopped: each worker has logged its span count on the way out.
    spans = spans_exported(instrumented)
    if spans == 0:
        raise BenchError(f"the instrumented server exported no spans: tracing was off.\n{instrumented.log_tail()}")
    return Measurement(runs=runs, requests=requests, spans=spans)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = measure_in_workdir("overhead.py", "perfhub-bench-", lambda workdir: measure(args, workdir))
    if result is None:
        return 1

    instrumented_rps = statistics.median(run.rps for run in result.runs["instrumented"])
    bare_rps = statistics.median(run.rps for run in result.runs["bare"])
    ratio = instrumented_rps / bare_rps
    met = ratio >= TARGET_RATIO
    # Each round's own ratio, of two runs seconds apart: their spread shows
    # how far the machine's load moved the figures.
    round_ratios = [
        instrumented.rps / bare.rps
        for instrumented, bare in zip(result.runs["instrumented"], result.runs["bare"], strict=True)
    ]
    # One span per request and one per SQL query (two for whoami: the token
    # lookup), plus the requests still in flight when wrk stopped, which it
    # does not count.
    print(f"tracing: {result.spans} spans exported to memory; wrk counted {result.requests['instrumented']} requests")
    report_noise(result.runs)
    print(
        f"median: instrumented {instrumented_rps:.1f} rps, bare {bare_rps:.1f} rps, ratio {ratio:.3f} "
        f"(target >= {TARGET_RATIO:.2f}: {'met' if met else 'NOT met'}); "
        f"round ratios {min(round_ratios):.3f}-{max(round_ratios):.3f}, median {statistics.median(round_ratios):.3f}"
    )
    print_result(
        {
            "instrumented_rps": round(instrumented_rps, 1),
            "bare_rps": round(bare_rps, 1),
            "ratio": round(ratio, 3),
            "target": TARGET_RATIO,
            "target_met": met,
            "path": args.path,
            "workers": args.workers,
            "rounds": args.rounds,
            "duration_s": args.duration,
            "instrumented_runs_rps": [run.rps for run in result.runs["instrumented"]],
            "bare_runs_rps": [run.rps for run in result.runs["bare"]],
            "round_ratios": [round(value, 3) for value in round_ratios],
            "round_ratio_median": round(statistics.median(round_ratios), 3),
            "traces_sampler": args.traces_sampler or "default",
            "traces_sampler_arg": args.traces_sampler_arg or "default",
            "spans_exported": result.spans,
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
