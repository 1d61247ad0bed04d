import io

import psycopg
import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.management import call_command
from django.db import connection

from apps.core.locks import job_lock
from apps.core.management.commands.worker import HEARTBEAT_KEY, batch_slow_seconds, default_jobs
from apps.resilience.breakers import breaker
from tests.helpers import require

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
def test_a_job_lock_is_held_by_one_process_at_a_time() -> None:
    require(connection.vendor == "postgresql", "advisory locks are PostgreSQL's")
    settings = connection.settings_dict
    other = psycopg.connect(
        host=settings["HOST"] or "127.0.0.1",
        port=settings["PORT"] or 5432,
        user=settings["USER"],
        password=settings["PASSWORD"] or None,
        dbname=settings["NAME"],
        autocommit=True,
    )
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
