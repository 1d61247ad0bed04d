import gc
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from types import FrameType

import pybreaker
from django.conf import settings
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser
from django.db import DatabaseError, close_old_connections

from apps.core.locks import job_lock
from apps.resilience.breakers import breaker
from apps.vitals.services import PreparedBatch, metrics_prepare, metrics_write
from apps.vitals.stream import StreamConsumer, gc_tuned_for_batches
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
        # Partitions ahead, retention, minute rollups folded into hours.
        PeriodicJob("vitals_maintain", interval=600),
        # pg_stat_statements and size snapshots: the slow-query windows and
        # size growth are differences between them.
        PeriodicJob("database_snapshot", interval=300),
        # Redis INFO counters: the cache page's windows are differences
        # between these snapshots, so they fill even when nobody is looking.
        PeriodicJob("cache_snapshot", interval=30),
    ]


def _prepare(records: list[dict[str, object]]) -> PreparedBatch:
    return metrics_prepare(records=records)


# A batch's write takes the longer the more metrics it holds, and with a
# backlog every batch is full (50,000 metrics, a few seconds). It counts as a
# slow call of the database breaker only below this rate, so that a backlog
# does not open the breaker (and show the database as down) by itself.
SLOW_BATCH_METRICS_PER_S = 1000


def batch_slow_seconds(metrics: int) -> float:
    """How long the write of a batch of ``metrics`` may take before it counts
    as slow: the breaker's own allowance, or more for a large batch."""
    return max(breaker("database").config.slow_seconds, metrics / SLOW_BATCH_METRICS_PER_S)


def _store_behind_breaker(batch: PreparedBatch) -> object:
    """Write a batch of stream records to the database through its breaker,
    whose state the web processes show as the "database down" degradation
    mode. An open breaker is a DatabaseError to the consumer: the entries
    stay pending."""
    try:
        with breaker("database").calling(slow_seconds=batch_slow_seconds(len(batch.latest))):
            return metrics_write(batch=batch)
    except pybreaker.CircuitBreakerError as exc:
        raise DatabaseError(str(exc)) from exc


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
        consumer = self._stream_consumer()
        next_heartbeat = next_reclaim = 0.0
        with gc_tuned_for_batches() if consumer is not None else nullcontext():
            while not self.stopping:
                now = time.monotonic()
                if now >= next_heartbeat:
                    self._heartbeat(identity)
                    next_heartbeat = now + settings.WORKER_HEARTBEAT_SECONDS
                for job in jobs:
                    if once or now >= job.next_run:
                        self._run(job)
                        job.next_run = time.monotonic() + job.interval
                if consumer is not None:
                    if now >= next_reclaim:
                        self._consume(consumer.reclaim)
                        next_reclaim = now + 30
                    # Blocks up to a second when the stream is idle, which also
                    # paces the loop.
                    written = self._consume(consumer.poll)
                    while once and written:
                        written = self._consume(consumer.poll)
                    # Collection is off while batches are written
                    # (gc_tuned_for_batches); a poll returns when its last
                    # batch is written, so this walks little.
                    gc.collect()
                elif not once:
                    # Short sleeps keep shutdown prompt after a signal.
                    time.sleep(0.5)
                if once:
                    break
        self.stdout.write(f"PerfHub worker {identity} stopped.")

    def _stream_consumer(self) -> "StreamConsumer | None":
        if not settings.REDIS_URL:
            return None  # the embedded default writes beacons in the request
        consumer = StreamConsumer(prepare=_prepare, store=_store_behind_breaker)
        consumer.ensure_group()
        self.stdout.write(f"Consuming the beacon stream as {consumer.name}.")
        return consumer

    def _consume(self, step: Callable[[], int]) -> int:
        # A connection the database dropped while the stream was idle is
        # replaced before the next write.
        close_old_connections()
        try:
            return step()
        except Exception:
            # Redis or the database is away: the entries stay pending and are
            # retried; back off so the logs are not flooded.
            logger.exception("beacon stream step failed; retrying in 2s")
            time.sleep(2)
            return 0

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
