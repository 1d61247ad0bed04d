import io
import threading

import psycopg
import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.management import call_command
from django.db import connection

from apps.core.locks import job_lock
from apps.core.management.commands.worker import (
    HEARTBEAT_KEY,
    _store_behind_breaker,
    batch_slow_seconds,
    default_jobs,
)
from apps.resilience.breakers import breaker
from apps.vitals.models import Metric, Site
from apps.vitals.services import _site_lock_key, metrics_prepare
from tests.helpers import require
from tests.vitals.test_store import record

pytestmark = pytest.mark.django_db


def test_ensure_admin_creates_one_administrator_with_a_random_password() -> None:
    out = io.StringIO()
    call_command("ensure_admin", stdout=out)
    text = out.getvalue()
    assert "Created the administrator 'admin' with the password: " in text
    assert "manage.py changepassword admin" in text
    password = text.split("password: ")[1].split()[0]
    admin = User.objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff
    assert admin.check_password(password)
    assert len(password) >= 20

    again = io.StringIO()
    call_command("ensure_admin", stdout=again)
    assert "already exists" in again.getvalue()
    assert User.objects.count() == 1


def test_two_fresh_installs_get_different_passwords() -> None:
    first, second = io.StringIO(), io.StringIO()
    call_command("ensure_admin", stdout=first)
    User.objects.all().delete()
    call_command("ensure_admin", stdout=second)
    assert first.getvalue().split("password: ")[1].split()[0] != second.getvalue().split("password: ")[1].split()[0]


def test_the_worker_runs_its_jobs_and_beats(viewer: User) -> None:
    out = io.StringIO()
    call_command("worker", "--once", stdout=out)
    assert f"started with {len(default_jobs())} periodic job(s)" in out.getvalue()
    assert "stopped" in out.getvalue()
    beat = cache.get(HEARTBEAT_KEY)
    assert beat is not None and beat["at"] > 0


def test_a_full_batch_may_take_longer_than_a_single_write_before_it_is_slow() -> None:
    # A backlog fills every batch (50,000 metrics take seconds to write); the
    # database breaker must not read that as a sick database.
    single = breaker("database").config.slow_seconds
    assert batch_slow_seconds(5) == single
    assert batch_slow_seconds(50_000) == 50.0 > single


@pytest.mark.django_db(transaction=True)
def test_a_full_batch_slowed_by_the_database_is_slow_only_past_its_allowance() -> None:
    require(connection.vendor == "postgresql", "the site lock is PostgreSQL's")
    database = breaker("database")
    database.forget_local()
    database.close("test set-up")
    site = Site.objects.create(name="slow", allowed_origins=["*"])
    # Another session holds the site's lock, so that each write waits for it
    # a little longer than a single call may take before it is slow.
    other = _other_session()
    wait = database.config.slow_seconds + 0.3
    try:
        start = 0
        for metrics, slow_after in ((5_000, 0), (5, 1)):
            records = [record(site, n, value=1000.0) for n in range(start, start + metrics)]
            start += metrics
            other.execute("SELECT pg_advisory_lock(%s)", [_site_lock_key(site.pk)])
            unlock = threading.Timer(
                wait, lambda: other.execute("SELECT pg_advisory_unlock(%s)", [_site_lock_key(site.pk)])
            )
            unlock.start()
            _store_behind_breaker(metrics_prepare(records=records))
            unlock.join()
            # 5,000 metrics may take 5 s; 5 metrics, the breaker's 2 s.
            window = database.status().window
            assert window.slow == slow_after, (metrics, window)
        assert Metric.objects.filter(site=site).count() == 5_005
        assert database.current_state == "closed"
    finally:
        other.close()
        database.close("test tear-down")


def _other_session() -> psycopg.Connection:
    """A PostgreSQL session of its own (another worker replica)."""
    settings = connection.settings_dict
    return psycopg.connect(
        host=settings["HOST"] or "127.0.0.1",
        port=settings["PORT"] or 5432,
        user=settings["USER"],
        password=settings["PASSWORD"] or None,
        dbname=settings["NAME"],
        autocommit=True,
    )


@pytest.mark.django_db(transaction=True)
def test_a_job_lock_is_held_by_one_process_at_a_time() -> None:
    require(connection.vendor == "postgresql", "advisory locks are PostgreSQL's")
    other = _other_session()
    try:
        with job_lock("job:test") as acquired:
            assert acquired
            # Another session (another worker replica) cannot take it...
            assert other.execute("SELECT pg_try_advisory_lock(%s)", [_key("job:test")]).fetchone() == (False,)
        # ...until this one releases it.
        assert other.execute("SELECT pg_try_advisory_lock(%s)", [_key("job:test")]).fetchone() == (True,)
        with job_lock("job:test") as acquired:
            assert not acquired
    finally:
        other.close()


def _key(name: str) -> int:
    from apps.core.locks import _lock_id

    return _lock_id(name)
