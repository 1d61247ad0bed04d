"""Dependency checks, shared by the readiness probe (``/readyz``: database,
cache, migrations, run in turn) and the health report (every check, run
concurrently with a timeout each).

A check returns its message (status ok), returns a ``Verdict`` for another
status, or raises (status down). ``_run`` turns that into a CheckResult and
never raises.
"""

import shutil
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor

from apps.resilience.metrics import HEALTH_LATENCY, HEALTH_STATUS, STATUS_VALUES, STREAM_BACKLOG
from apps.resilience.retries import retry_idempotent

OK, DEGRADED, DOWN, SKIPPED = "ok", "degraded", "down", "skipped"


@dataclass(frozen=True)
class Verdict:
    status: str
    message: str


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool  # for readiness: anything but down
    latency_ms: float
    message: str
    status: str = OK


def _run(name: str, check: Callable[[], "str | Verdict"]) -> CheckResult:
    start = time.perf_counter()
    try:
        outcome = check()
    except Exception as exc:  # noqa: BLE001 - a probe reports every failure, whatever its type
        outcome = Verdict(DOWN, f"{type(exc).__name__}: {exc}".strip()[:500])
    if isinstance(outcome, str):
        outcome = Verdict(OK, outcome)
    return CheckResult(
        name=name,
        ok=outcome.status != DOWN,
        latency_ms=round((time.perf_counter() - start) * 1000, 2),
        message=outcome.message,
        status=outcome.status,
    )


def _database() -> str:
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "reachable"


def _raw_cache() -> Any:
    # Past the redis-cache breaker (apps/resilience/cache.py): a probe wants
    # the real error, not the bypass.
    unguarded = getattr(cache, "unguarded", None)
    return unguarded() if unguarded is not None else cache


def _cache() -> str:
    key = f"perfhub:probe:{uuid.uuid4().hex}"
    backend = _raw_cache()
    backend.set(key, "1", timeout=10)
    if backend.get(key) != "1":
        raise RuntimeError("a value written to the cache could not be read back")
    backend.delete(key)
    return "reachable"


# Once every migration is applied in this process's lifetime it stays so
# (new migrations arrive only with new code, hence a new process), so the
# migration graph is loaded from disk only until the first success.
_migrations_applied = False


def _migrations() -> str:
    global _migrations_applied
    if _migrations_applied:
        return "all applied"
    executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        names = ", ".join(f"{m.app_label}.{m.name}" for m, _ in plan[:5])
        more = f" and {len(plan) - 5} more" if len(plan) > 5 else ""
        raise RuntimeError(f"{len(plan)} unapplied migration(s): {names}{more}")
    _migrations_applied = True
    return "all applied"


def readiness_checks() -> list[CheckResult]:
    results = [_run("database", _database), _run("cache", _cache)]
    # The migration check needs the database; when that is down, the first
    # failure already names the cause.
    if results[0].ok:
        results.append(_run("migrations", _migrations))
    return results


# --- Health: every check, concurrently ------------------------------------------

# Only idempotent reads are retried (a probe key written and read back, XLEN,
# XPENDING, GET of the heartbeat): a transient blip should not flip the health
# status, and doing them twice changes nothing. Bounded well inside the check
# timeout (three tries, at most about 0.5 s of waiting).
_retry_reads = retry_idempotent()


def _cache_health() -> "str | Verdict":
    try:
        return _retry_reads(_cache)()
    except Exception as exc:
        if not settings.REDIS_URL:
            raise
        # Redis down has a fallback (DESIGN.md, Degradation): degraded, not down.
        return Verdict(
            DEGRADED,
            f"Redis unreachable ({type(exc).__name__}: {exc}); cache bypassed, beacons written to the database",
        )


def _stream() -> "str | Verdict":
    if not settings.REDIS_URL:
        return Verdict(SKIPPED, "no Redis: beacons are written to the database in the request")
    from apps.vitals.stream import GROUP, STREAM, redis_client

    @_retry_reads
    def read() -> tuple[int, int]:
        client = redis_client()
        length = int(client.xlen(STREAM))
        try:
            pending = int(client.xpending(STREAM, GROUP)["pending"])
        except redis.ResponseError:
            pending = 0  # no consumer group yet: no worker has started
        return length, pending

    try:
        length, pending = read()
    except Exception as exc:
        return Verdict(DEGRADED, f"stream unreadable ({type(exc).__name__}: {exc}); see the cache check")
    STREAM_BACKLOG.labels(kind="entries").set(length)
    STREAM_BACKLOG.labels(kind="pending").set(pending)
    message = f"{length} entr{'y' if length == 1 else 'ies'} waiting, {pending} read but not yet written"
    if length >= settings.HEALTH_BACKLOG_DOWN:
        return Verdict(DOWN, f"{message} (limit {settings.HEALTH_BACKLOG_DOWN})")
    if length >= settings.HEALTH_BACKLOG_DEGRADED:
        return Verdict(DEGRADED, f"{message} (warning at {settings.HEALTH_BACKLOG_DEGRADED})")
    return message


def _worker() -> "str | Verdict":
    from apps.core.management.commands.worker import HEARTBEAT_KEY

    try:
        beat = _retry_reads(_raw_cache().get)(HEARTBEAT_KEY)
    except Exception as exc:
        return Verdict(DEGRADED, f"heartbeat unreadable ({type(exc).__name__}: {exc}); see the cache check")
    if not beat:
        return Verdict(DEGRADED, "no worker heartbeat seen: is `manage.py worker` running?")
    age = time.time() - float(beat["at"])
    limit = 3 * settings.WORKER_HEARTBEAT_SECONDS
    if age > limit:
        return Verdict(DEGRADED, f"last heartbeat from {beat['worker']} {age:.0f}s ago (limit {limit}s)")
    return f"{beat['worker']} beat {age:.0f}s ago"


def _disk() -> "str | Verdict":
    usage = shutil.disk_usage(settings.DATA_DIR)
    free = usage.free / usage.total * 100 if usage.total else 0.0
    message = f"{free:.1f}% free ({usage.free / 2**30:.1f} GiB of {usage.total / 2**30:.1f} GiB) on {settings.DATA_DIR}"
    if free < settings.HEALTH_DISK_DOWN_PERCENT:
        return Verdict(DOWN, message)
    if free < settings.HEALTH_DISK_DEGRADED_PERCENT:
        return Verdict(DEGRADED, message)
    return message


def _backup() -> "str | Verdict":
    # The backups app provides this selector once it exists; until then the
    # check is skipped, which does not make PerfHub unhealthy.
    try:
        from apps.backups.selectors import last_successful_backup_at
    except ImportError:
        return Verdict(SKIPPED, "not configured: no backups app yet")
    finished = last_successful_backup_at()
    if finished is None:
        return Verdict(DEGRADED, "no successful backup yet")
    hours = (time.time() - finished.timestamp()) / 3600
    if hours > settings.HEALTH_BACKUP_MAX_AGE_HOURS:
        return Verdict(
            DEGRADED, f"last successful backup {hours:.0f} h ago (limit {settings.HEALTH_BACKUP_MAX_AGE_HOURS} h)"
        )
    return f"last successful backup {hours:.1f} h ago"


def _breakers() -> "str | Verdict":
    from apps.resilience.breakers import CLOSED, all_breakers

    unhealthy = [b.status() for b in all_breakers()]
    unhealthy = [s for s in unhealthy if s.state != CLOSED]
    if unhealthy:
        # An open breaker means a fallback is in use: degraded, never down.
        return Verdict(DEGRADED, "; ".join(f"{s.name} {s.state}: {s.reason}" for s in unhealthy))
    return "all closed"


def _in_thread(name: str, check: Callable[[], "str | Verdict"]) -> CheckResult:
    try:
        return _run(name, check)
    finally:
        # Django connections are per thread: close the ones this check opened.
        connections.close_all()


HEALTH_CHECKS: dict[str, Callable[[], "str | Verdict"]] = {
    "database": _database,
    "cache": _cache_health,
    "stream": _stream,
    "worker": _worker,
    "disk": _disk,
    "migrations": _migrations,
    "backup": _backup,
    "breakers": _breakers,
}

# Shared and never shut down: a hung check keeps its thread until it returns,
# but the response does not wait for it. The bound keeps hung checks from
# piling up threads; a check queued behind them is reported timed out too.
_executor = ThreadPoolExecutor(max_workers=4 * len(HEALTH_CHECKS), thread_name_prefix="health")


@dataclass(frozen=True)
class HealthReport:
    status: str
    checks: list[CheckResult]

    @property
    def healthy(self) -> bool:
        return self.status != DOWN


def health_report(
    *, timeout: float | None = None, checks: dict[str, Callable[[], "str | Verdict"]] | None = None
) -> HealthReport:
    """Run the checks concurrently; one that does not finish within
    ``timeout`` seconds is reported down without holding the answer."""
    timeout = settings.HEALTH_CHECK_TIMEOUT if timeout is None else timeout
    chosen = HEALTH_CHECKS if checks is None else checks
    futures = {name: _executor.submit(_in_thread, name, check) for name, check in chosen.items()}
    wait_for(futures.values(), timeout=timeout)
    results = []
    for name, future in futures.items():
        if future.done():
            results.append(future.result())
        else:
            results.append(CheckResult(name, False, round(timeout * 1000, 2), f"timed out after {timeout:g}s", DOWN))
    for result in results:
        HEALTH_STATUS.labels(check=result.name).set(STATUS_VALUES[result.status])
        HEALTH_LATENCY.labels(check=result.name).set(result.latency_ms / 1000)
    statuses = {r.status for r in results}
    overall = DOWN if DOWN in statuses else DEGRADED if DEGRADED in statuses else OK
    return HealthReport(status=overall, checks=results)
