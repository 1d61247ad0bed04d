"""gunicorn settings for PerfHub: ``gunicorn -c perfhub/gunicorn_conf.py perfhub.wsgi``.

Prometheus runs in multiprocess mode: each worker writes its samples to
files in PROMETHEUS_MULTIPROC_DIR and a scrape, answered by any worker, sums
them. The directory is emptied when the master starts (stale files from an
earlier run would add old counts) and a dead worker's live gauges are
dropped in child_exit.
"""

import gc
import os
import shutil
from pathlib import Path
from typing import Any

from perfhub.env import data_dir, default_web_workers, env_int, env_str

_multiproc_dir = Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(data_dir() / "prometheus")))

bind = env_str("PERFHUB_BIND", "127.0.0.1:8000")
workers = env_int("PERFHUB_WEB_WORKERS", default_web_workers(), minimum=1, maximum=64)
threads = env_int("PERFHUB_WEB_THREADS", 1, minimum=1, maximum=64)
worker_class = "gthread" if threads > 1 else "sync"
timeout = env_int("PERFHUB_WEB_TIMEOUT", 30, minimum=1)
graceful_timeout = 20
keepalive = 5
# Recycle workers now and then so a slow leak cannot grow without bound; the
# jitter keeps them from restarting all at once. Not too often: a worker
# takes about a second to start, while the others answer its share, and
# at 20,000 requests a worker busy with beacons restarted every ten
# seconds or so (bench/ingest.py's p99 rose from 20 to 400-700 ms then).
max_requests = 200_000
max_requests_jitter = 20_000
# Each worker tells the master it is alive by changing its heartbeat file's
# mode (os.fchmod) on every pass of its loop, once a request for sync
# workers. On a disk-backed /tmp that is a metadata write each time, which
# can block; gunicorn's documentation advises a memory filesystem.
# (The file is made by mkstemp and unlinked at once: a shared directory is safe.)
_MEMORY_FILESYSTEM = "/dev/shm"  # noqa: S108
worker_tmp_dir = _MEMORY_FILESYSTEM if os.path.isdir(_MEMORY_FILESYSTEM) else None
# PerfHub logs one line per request itself (with the request id).
accesslog = None
errorlog = "-"
proc_name = "perfhub-web"


def on_starting(server: Any) -> None:
    shutil.rmtree(_multiproc_dir, ignore_errors=True)
    _multiproc_dir.mkdir(parents=True, exist_ok=True)


def post_fork(server: Any, worker: Any) -> None:
    from perfhub.telemetry import configure_tracing

    configure_tracing()


def post_worker_init(worker: Any) -> None:
    # ua-parser builds its resolver on first use (about 0.2 s): pay it here,
    # not in the first visitor's beacon after each worker (re)start.
    from apps.vitals.normalize import parse_user_agent

    parse_user_agent("Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0.0.0")
    # The app is loaded: the ~120,000 objects of Django and the libraries
    # live as long as the worker. Frozen, the garbage collector stops
    # walking them in every full collection (60 ms or more each on a 2-core
    # machine, one every few thousand requests).
    gc.freeze()


def worker_exit(server: Any, worker: Any) -> None:
    from perfhub.telemetry import shutdown_tracing

    shutdown_tracing()


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


# PerfHub does not use gunicorn's control socket, and a fixed path would
# collide when two servers run on one host (tests, benchmarks).
control_socket_disable = True
