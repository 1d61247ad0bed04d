"""Dependency checks shared by the readiness probe (and, later, the health
endpoint). Each check returns a CheckResult and never raises."""

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    latency_ms: float
    message: str


def _run(name: str, check: Callable[[], str]) -> CheckResult:
    start = time.perf_counter()
    try:
        message = check()
        ok = True
    except Exception as exc:  # noqa: BLE001 - a probe reports every failure, whatever its type
        message = f"{type(exc).__name__}: {exc}".strip()[:500]
        ok = False
    return CheckResult(name=name, ok=ok, latency_ms=round((time.perf_counter() - start) * 1000, 2), message=message)


def _database() -> str:
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "reachable"


def _cache() -> str:
    key = f"perfhub:probe:{uuid.uuid4().hex}"
    cache.set(key, "1", timeout=10)
    if cache.get(key) != "1":
        raise RuntimeError("a value written to the cache could not be read back")
    cache.delete(key)
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
