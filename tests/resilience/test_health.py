"""Health checks: statuses, concurrency with a timeout each, and the
``health`` management command's exit codes."""

import io
import json
import time

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.db.migrations.recorder import MigrationRecorder
from django.test import override_settings

from apps.core.management.commands.worker import HEARTBEAT_KEY
from apps.resilience import health
from apps.resilience.breakers import breaker
from apps.resilience.health import health_report
from tests.helpers import free_port, redis_configured, require

pytestmark = pytest.mark.django_db


def by_name(report: health.HealthReport) -> dict[str, health.CheckResult]:
    return {check.name: check for check in report.checks}


def test_every_check_reports_status_latency_and_message() -> None:
    cache.set(HEARTBEAT_KEY, {"worker": "host:1", "at": time.time()}, timeout=None)
    report = health_report()
    checks = by_name(report)
    assert set(checks) == {"database", "cache", "stream", "worker", "disk", "migrations", "backup", "breakers"}
    assert checks["database"].status == "ok"
    assert checks["cache"].status == "ok"
    assert checks["migrations"].status == "ok"
    assert checks["worker"].status == "ok" and "host:1" in checks["worker"].message
    assert checks["backup"].status == "skipped" and "not configured" in checks["backup"].message
    assert checks["breakers"].message == "all closed"
    assert checks["stream"].status == ("ok" if redis_configured() else "skipped")
    assert all(check.latency_ms >= 0 for check in report.checks)
    assert report.status == "ok" and report.healthy


def test_a_missing_or_stale_heartbeat_is_degraded() -> None:
    assert by_name(health_report())["worker"].status == "degraded"
    cache.set(HEARTBEAT_KEY, {"worker": "host:1", "at": time.time() - 3600}, timeout=None)
    worker = by_name(health_report())["worker"]
    assert worker.status == "degraded" and "3600s ago" in worker.message


def test_an_open_breaker_is_degraded_not_down() -> None:
    breaker("webhooks").open("test: receiver refused")
    report = health_report()
    check = by_name(report)["breakers"]
    assert check.status == "degraded"
    assert "webhooks open: test: receiver refused" in check.message
    assert report.healthy


def test_a_hung_check_is_down_after_its_timeout_without_holding_the_report() -> None:
    def hung() -> str:
        time.sleep(3)
        return "never seen"

    started = time.perf_counter()
    report = health_report(timeout=0.3, checks={"hung": hung, "disk": health._disk})
    elapsed = time.perf_counter() - started
    assert elapsed < 1.5
    checks = by_name(report)
    assert checks["hung"].status == "down" and checks["hung"].message == "timed out after 0.3s"
    assert checks["disk"].status == "ok"
    assert report.status == "down" and not report.healthy


def test_checks_run_concurrently() -> None:
    def slow() -> str:
        time.sleep(0.4)
        return "done"

    started = time.perf_counter()
    report = health_report(timeout=2, checks={f"slow{n}": slow for n in range(5)})
    assert time.perf_counter() - started < 1.5  # not 5 x 0.4 s
    assert report.status == "ok"


def test_disk_thresholds() -> None:
    with override_settings(HEALTH_DISK_DEGRADED_PERCENT=100):
        assert by_name(health_report())["disk"].status == "degraded"
    with override_settings(HEALTH_DISK_DOWN_PERCENT=100, HEALTH_DISK_DEGRADED_PERCENT=100):
        report = health_report()
        assert by_name(report)["disk"].status == "down"
        assert report.status == "down"


def test_stream_backlog_thresholds() -> None:
    require(redis_configured(), "the beacon stream needs Redis")
    from apps.vitals.stream import STREAM, redis_client

    for n in range(3):
        redis_client().xadd(STREAM, {"r": f"[{n}]"})
    assert "3 entries waiting" in by_name(health_report())["stream"].message
    with override_settings(HEALTH_BACKLOG_DEGRADED=2):
        assert by_name(health_report())["stream"].status == "degraded"
    with override_settings(HEALTH_BACKLOG_DEGRADED=2, HEALTH_BACKLOG_DOWN=3):
        assert by_name(health_report())["stream"].status == "down"


def test_redis_down_is_degraded_because_the_cache_has_a_fallback() -> None:
    require(redis_configured(), "needs Redis")
    from django.conf import settings

    dead = {**settings.CACHES["default"], "LOCATION": f"redis://127.0.0.1:{free_port()}/0"}
    with override_settings(CACHES={"default": dead}):
        report = health_report()
    checks = by_name(report)
    assert checks["cache"].status == "degraded"
    assert "cache bypassed" in checks["cache"].message
    assert checks["worker"].status == "degraded"
    assert report.healthy


@pytest.mark.django_db(transaction=True)
def test_unapplied_migrations_are_down(monkeypatch: pytest.MonkeyPatch) -> None:
    # Committed (transaction=True): the checks run in their own threads and
    # connections.
    monkeypatch.setattr(health, "_migrations_applied", False)
    row = MigrationRecorder.Migration.objects.get(app="resilience", name="0001_initial")
    row.delete()
    try:
        report = health_report()
        check = by_name(report)["migrations"]
        assert check.status == "down" and "resilience.0001_initial" in check.message
        assert not report.healthy
    finally:
        MigrationRecorder.Migration.objects.create(app="resilience", name="0001_initial")


def test_health_command_prints_a_table_and_exits_zero_when_healthy() -> None:
    out = io.StringIO()
    call_command("health", stdout=out)
    text = out.getvalue()
    assert text.splitlines()[0].split() == ["check", "status", "latency", "message"]
    assert "database" in text and "overall: " in text


def test_health_command_json_and_non_zero_exit_when_unhealthy() -> None:
    out = io.StringIO()
    with override_settings(HEALTH_DISK_DOWN_PERCENT=100), pytest.raises(SystemExit) as exited:
        call_command("health", "--json", stdout=out)
    assert exited.value.code == 1
    body = json.loads(out.getvalue())
    assert body["status"] == "down"
    assert {c["name"]: c["status"] for c in body["checks"]}["disk"] == "down"


def test_health_command_refuses_a_bad_timeout() -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--timeout must be positive"):
        call_command("health", "--timeout", "0", stdout=io.StringIO())
