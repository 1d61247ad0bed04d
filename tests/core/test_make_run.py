"""`make run`, the README's first command, end to end: on a fresh data
directory it migrates, prints the administrator's password once and serves;
Ctrl-C stops every process it started; a second run reuses everything."""

import http.cookiejar
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from tests.helpers import BASE_DIR, free_port, require_tool

# Generous: the first run collects static files and migrates a new database;
# where the virtualenv's stamp is stale it also runs pip first.
START_TIMEOUT = 180.0
STOP_TIMEOUT = 30.0
PASSWORD_LINE = re.compile(r"Created the administrator 'admin' with the password: (\S+)")
CHANGEPASSWORD_HINT = ".venv/bin/python manage.py changepassword admin"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


class MakeRun:
    """`make run` in its own process group, its merged output read by a
    thread so that a full pipe can never block the server."""

    def __init__(self, *, port: int, data_dir: Path) -> None:
        self.port = port
        env = dict(os.environ)
        # The embedded default: SQLite and the local-memory cache in a fresh
        # data directory, with a secret key generated there. Typed in a plain
        # shell, so no outer make's flags either (`make test` runs this test).
        for name in ("DATABASE_URL", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR", "SECRET_KEY"):
            env.pop(name, None)
        for name in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
            env.pop(name, None)
        env.update({"PERFHUB_BIND": f"127.0.0.1:{port}", "PERFHUB_DATA_DIR": str(data_dir)})
        self.process = subprocess.Popen(
            ["make", "run"],
            cwd=BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self._lines.append(ANSI_ESCAPE.sub("", raw.decode(errors="replace")))

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"make run exited with {self.process.returncode} before serving:\n{self.output}")
            try:
                with urllib.request.urlopen(self.url("/login/"), timeout=2) as response:  # noqa: S310 (http://127.0.0.1)
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.25)
        pytest.fail(f"make run did not serve /login/ within {START_TIMEOUT}s:\n{self.output}")

    def interrupt(self) -> None:
        """Ctrl-C in a terminal: SIGINT to the whole foreground group."""
        os.killpg(self.process.pid, signal.SIGINT)

    def wait_for_the_group_to_exit(self) -> None:
        deadline = time.monotonic() + STOP_TIMEOUT
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"make run still running {STOP_TIMEOUT}s after SIGINT:\n{self.output}")
        # make is gone; gunicorn, its workers and the worker must be too.
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                self._reader.join(timeout=5)
                return
            time.sleep(0.1)
        pytest.fail(f"processes of make run's group outlived it by {STOP_TIMEOUT}s:\n{self.output}")

    def kill(self) -> None:
        """Clean-up after a failed assertion: nothing may outlive the test."""
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@contextmanager
def make_run(*, port: int, data_dir: Path) -> Iterator[MakeRun]:
    run = MakeRun(port=port, data_dir=data_dir)
    try:
        yield run
    finally:
        run.kill()


def log_in_and_open_the_overview(run: MakeRun, password: str) -> str:
    """Django's login form as a browser without JavaScript fills it: the CSRF
    cookie and field from the GET, the session cookie from the POST."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    with opener.open(run.url("/login/?next=/"), timeout=10) as response:
        form = response.read().decode()
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
    assert match, form
    fields = {"csrfmiddlewaretoken": match[1], "username": "admin", "password": password, "next": "/"}
    # The POST answers with a redirect to the overview, which the opener follows.
    with opener.open(run.url("/login/"), data=urllib.parse.urlencode(fields).encode(), timeout=10) as response:
        assert response.status == 200
        assert urllib.parse.urlsplit(response.url).path == "/"
        return str(response.read().decode())


def nothing_listens_on(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def stop(run: MakeRun) -> None:
    run.interrupt()
    run.wait_for_the_group_to_exit()
    assert run.output.count("PerfHub stopped.") == 1, run.output
    assert nothing_listens_on(run.port)


def test_make_run_starts_on_a_fresh_data_dir_stops_on_ctrl_c_and_restarts(tmp_path: Path) -> None:
    require_tool("make")
    data_dir = tmp_path / "data"
    port = free_port()

    with make_run(port=port, data_dir=data_dir) as first:
        first.wait_until_serving()
        password_line = PASSWORD_LINE.search(first.output)
        assert password_line, first.output
        password = password_line[1]
        assert CHANGEPASSWORD_HINT in first.output
        assert f"PerfHub: http://127.0.0.1:{port}/" in first.output
        assert (data_dir / "perfhub.sqlite3").exists()
        secret_key = (data_dir / "secret_key").read_text()

        overview = log_in_and_open_the_overview(first, password)
        assert "<h1>Overview</h1>" in overview
        assert "admin" in overview

        stop(first)

    # The same data directory: the database, the administrator and the key
    # are reused, and the virtualenv is not installed again.
    with make_run(port=port, data_dir=data_dir) as second:
        second.wait_until_serving()
        assert "A superuser already exists" in second.output
        assert not PASSWORD_LINE.search(second.output), second.output
        assert "pip install" not in second.output, second.output
        assert (data_dir / "secret_key").read_text() == secret_key
        assert "<h1>Overview</h1>" in log_in_and_open_the_overview(second, password)

        stop(second)
