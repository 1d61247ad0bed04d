import logging
import os
import signal
import socket
import time
from dataclasses import dataclass
from types import FrameType

from django.conf import settings
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections

from apps.core.locks import job_lock
from perfhub.telemetry import configure_tracing

logger = logging.getLogger("perfhub.worker")

HEARTBEAT_KEY = "perfhub:worker:heartbeat"


@dataclass
class PeriodicJob:
    """A management command run every ``interval`` seconds by one worker of
    the deployment at a time. Each is also runnable on its own, so a
    Kubernetes CronJob can replace the worker's schedule."""

    command: str
    interval: float
    next_run: float = 0.0


def default_jobs() -> list[PeriodicJob]:
    return [
        # Expired sessions pile up in the database otherwise.
        PeriodicJob("clearsessions", interval=6 * 3600),
    ]


class Command(BaseCommand):
    help = "Run PerfHub's background worker: periodic jobs and a heartbeat. Stops cleanly on SIGINT/SIGTERM."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="Run every job once and exit (for tests and cron).")

    def handle(self, *args: object, once: bool, **options: object) -> None:
        configure_tracing()
        self.stopping = False
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        jobs = default_jobs()
        identity = f"{socket.gethostname()}:{os.getpid()}"
        self.stdout.write(f"PerfHub worker {identity} started with {len(jobs)} periodic job(s).")
        next_heartbeat = 0.0
        while not self.stopping:
            now = time.monotonic()
            if now >= next_heartbeat:
                self._heartbeat(identity)
                next_heartbeat = now + settings.WORKER_HEARTBEAT_SECONDS
            for job in jobs:
                if once or now >= job.next_run:
                    self._run(job)
                    job.next_run = time.monotonic() + job.interval
            if once:
                break
            # Short sleeps keep shutdown prompt after a signal.
            time.sleep(0.5)
        self.stdout.write(f"PerfHub worker {identity} stopped.")

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _heartbeat(self, identity: str) -> None:
        try:
            cache.set(HEARTBEAT_KEY, {"worker": identity, "at": time.time()}, timeout=None)
        except Exception:
            logger.exception("worker heartbeat could not be written")

    def _run(self, job: PeriodicJob) -> None:
        close_old_connections()
        try:
            with job_lock(f"job:{job.command}") as acquired:
                if not acquired:
                    logger.info("job %s skipped: another worker is running it", job.command)
                    return
                start = time.perf_counter()
                call_command(job.command, verbosity=0)
                logger.info("job %s done in %.1fs", job.command, time.perf_counter() - start)
        except Exception:
            # One failing job must not stop the worker or the other jobs; it
            # is retried at its next interval.
            logger.exception("job %s failed", job.command)
