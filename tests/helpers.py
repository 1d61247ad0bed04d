import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO
from urllib.parse import quote

import pytest
from django.db import connection

BASE_DIR = Path(__file__).resolve().parent.parent
PYTHON = str(BASE_DIR / ".venv" / "bin" / "python") if (BASE_DIR / ".venv").exists() else sys.executable
PASSWORD = "correct horse battery staple"


def bearer(secret: str) -> dict[str, str]:
    """Headers for the test client that authenticate with an API token."""
    return {"Authorization": f"Bearer {secret}"}


def postgres_configured() -> bool:
    return os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))


def redis_configured() -> bool:
    return os.environ.get("REDIS_URL", "").startswith(("redis://", "rediss://"))


def require(condition: bool, reason: str) -> None:
    """Skip when something outside the code is missing, except in CI
    (PERFHUB_REQUIRE_SERVICES=1), where a skipped test would hide it."""
    if condition:
        return
    if os.environ.get("PERFHUB_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required for CI: {reason}")
    pytest.skip(reason)


def require_tool(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"{name} is not installed")
    return str(path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def database_url_for_subprocess() -> str:
    """A DATABASE_URL for subprocesses (gunicorn, manage.py) that points at
    the database this test run uses, so they see the test's committed rows."""
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    user = quote(settings["USER"] or "")
    password = f":{quote(settings['PASSWORD'])}" if settings["PASSWORD"] else ""
    host = settings["HOST"] or "127.0.0.1"
    port = settings["PORT"] or "5432"
    return f"postgres://{user}{password}@{host}:{port}/{settings['NAME']}"


def subprocess_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env["DATABASE_URL"] = database_url_for_subprocess()
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(overrides)
    return env


def wait_for_port(port: int, *, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listened on port {port} within {timeout}s")


@contextmanager
def gunicorn(port: int, *, env: dict[str, str], workers: int = 2) -> Iterator[subprocess.Popen[bytes]]:
    """Run PerfHub under gunicorn with the project's own config."""
    env = {**env, "PERFHUB_BIND": f"127.0.0.1:{port}", "PERFHUB_WEB_WORKERS": str(workers)}
    # A file, not a pipe nobody reads: past 64 KiB of log the workers would block.
    with tempfile.TemporaryFile() as log:
        yield from _run_gunicorn(port, env, log)


def _run_gunicorn(port: int, env: dict[str, str], log: IO[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [str(BASE_DIR / ".venv" / "bin" / "gunicorn"), "--config", "perfhub/gunicorn_conf.py", "perfhub.wsgi"],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        wait_for_port(port, process=process)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
