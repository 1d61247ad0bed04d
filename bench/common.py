"""Helpers the benches share: each starts PerfHub the same way, so that their
figures stay comparable, and reports the same way, so that a caller can read
the last line of any of them."""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

BASE_DIR = Path(__file__).resolve().parent.parent
# PerfHub's own gunicorn settings, as deployed.
GUNICORN_CONF = BASE_DIR / "perfhub" / "gunicorn_conf.py"

# Variables that would point a bench somewhere it did not choose.
INHERITED_ENV_DROPPED = {
    "DATABASE_URL",
    "REDIS_URL",
    "DEBUG",
    "PROMETHEUS_MULTIPROC_DIR",
    "prometheus_multiproc_dir",
    "PERFHUB_INSTRUMENT",
    "PERFHUB_LOG_LEVEL",
    "PERFHUB_LOG_JSON",
    "PERFHUB_DATA_DIR",
    "DJANGO_SETTINGS_MODULE",
}
# And those that would make a gunicorn server differ from the one the bench
# meant to start.
SERVER_ENV_DROPPED = INHERITED_ENV_DROPPED | {"PERFHUB_BIND", "PERFHUB_WEB_WORKERS", "PERFHUB_WEB_THREADS"}

T = TypeVar("T")


class BenchError(Exception):
    """The measurement itself went wrong: the bench reports it and exits 1."""


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    multiproc_dir: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class HasRps(Protocol):
    @property
    def rps(self) -> float: ...


def free_port() -> int:
    """A loopback port nothing listens on, so that runs never collide."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def inherited_env(dropped: set[str]) -> dict[str, str]:
    """This process's environment without the variables (and no OTEL_*) that
    would make the run depend on the shell it was started from."""
    return {name: value for name, value in os.environ.items() if name not in dropped and not name.startswith("OTEL_")}


def run_python(
    name: str, command: list[str], env: dict[str, str], *, stdin: str | None = None, timeout: float = 300
) -> str:
    """Run the project's Python in the repository with the bench's
    environment; return its standard output. A failure is a BenchError."""
    try:
        result = subprocess.run(
            [sys.executable, *command],
            cwd=BASE_DIR,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{name} did not finish within {timeout:.0f}s.") from None
    if result.returncode != 0:
        raise BenchError(f"{name} failed with {result.returncode}:\n{result.stdout}{result.stderr}")
    return result.stdout


@contextmanager
def serve(name: str, *, env: dict[str, str], workdir: Path, config: Path = GUNICORN_CONF) -> Iterator[Server]:
    """A gunicorn server on a free port, logging to workdir, with its own
    Prometheus directory; stopped on the way out, whatever happened."""
    port = free_port()
    log = workdir / f"{name}.log"
    multiproc_dir = workdir / f"{name}-prometheus"
    env = {**env, "PERFHUB_BIND": f"127.0.0.1:{port}", "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir)}
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", str(config), "perfhub.wsgi"],
            cwd=BASE_DIR,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = Server(name=name, port=port, process=process, log=log, multiproc_dir=multiproc_dir)
    try:
        yield server
    finally:
        stop(server)


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_stat(pid: str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name, or None for a
    process that is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name, in parentheses, may itself hold spaces and ")".
    return text[text.rindex(")") + 2 :].split()


def process_tree_cpu_seconds(pid: int) -> float:
    """CPU time, user and system, of a process and every live descendant,
    plus what its reaped children used (a gunicorn master's recycled
    workers); 0.0 where /proc is not there to read."""
    parents: dict[str, str] = {}
    stats: dict[str, list[str]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit() and (fields := _proc_stat(entry)) is not None:
            parents[entry] = fields[1]  # ppid
            stats[entry] = fields
    if str(pid) not in stats:
        return 0.0
    tree = {str(pid)}
    grown = True
    while grown:
        children = {child for child, parent in parents.items() if parent in tree} - tree
        tree |= children
        grown = bool(children)
    # Fields 14-17 of stat (utime, stime, cutime, cstime), counted from the
    # state field here; a descendant's reaped children are in its cutime.
    ticks = sum(int(stats[member][11]) + int(stats[member][12]) for member in tree)
    ticks += sum(int(stats[member][13]) + int(stats[member][14]) for member in tree)
    return ticks / _CLOCK_TICKS


def stop(server: Server) -> None:
    """Stop gunicorn gracefully, so that its workers finish what they log at
    exit; kill it only if that takes more than 30s."""
    if server.process.poll() is not None:
        return
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def until_answered(server: Server, request: Callable[[], T], *, timeout: float) -> T:
    """Repeat request until a worker has loaded the app and answers it; fail
    as soon as the server exits, or after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise BenchError(f"the {server.name} server exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            return request()
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError(f"the {server.name} server did not answer within {timeout:.0f}s") from None
            time.sleep(0.2)


def load_average() -> str:
    """The one-minute load average: a busy machine explains odd figures."""
    return f"{os.getloadavg()[0]:.2f}"


def machine_load() -> str:
    return f"load average {load_average()} on {os.cpu_count()} CPUs"


def report_noise(runs: Mapping[str, Sequence[HasRps]]) -> None:
    """Say when one configuration's runs differ by more than 20%: the median
    of such runs means little."""
    for name, named_runs in runs.items():
        rates = [run.rps for run in named_runs]
        if max(rates) > 1.2 * min(rates):
            print(
                f"noisy: {name} runs ranged {min(rates):.1f}-{max(rates):.1f} rps; is something else loading the CPU?"
            )


def print_result(result: dict[str, Any]) -> None:
    """The last line printed: one JSON object, the part callers parse."""
    print(json.dumps(result))


def measure_in_workdir(program: str, prefix: str, measure: Callable[[Path], T]) -> T | None:
    """Run measure with wrk present, in a temporary directory removed after
    it; None, once the reason is printed, when the measurement went wrong
    (the bench then exits 1)."""
    if shutil.which("wrk") is None:
        print(f"{program}: error: wrk is not installed (Debian package wrk)", file=sys.stderr)
        return None
    try:
        with tempfile.TemporaryDirectory(prefix=prefix) as workdir:
            return measure(Path(workdir))
    except BenchError as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        return None


def check_load_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse the wrk and gunicorn options (--workers, --duration, --rounds,
    --warmup, --threads, --connections) that would give no measurement."""
    for name in ("workers", "duration", "rounds", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    if args.connections < args.threads:
        parser.error("wrk needs at least one connection per thread")
