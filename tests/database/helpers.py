from typing import Any

import psycopg
import pytest
from django.db import connection

from apps.database.postgres import statements_status
from tests.helpers import require


def postgres_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL statistics; this run uses SQLite")


def sqlite_only() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("the SQLite subset; this run uses PostgreSQL")


def require_statements() -> None:
    postgres_only()
    require(
        statements_status()["available"],
        "pg_stat_statements must be in shared_preload_libraries and created in the test database",
    )


def execute(sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall()) if cursor.description else []


def flush_table_stats() -> None:
    """Make this backend's table and index counters visible now: PostgreSQL
    15+ flushes them when the backend goes idle, at most once a second,
    unless forced."""
    execute("SELECT pg_stat_force_next_flush()")
    execute("SELECT pg_stat_clear_snapshot()")


def other_connection() -> psycopg.Connection[Any]:
    """A second connection to the test database, outside Django's."""
    settings = connection.settings_dict
    return psycopg.connect(
        dbname=settings["NAME"],
        host=settings["HOST"] or "127.0.0.1",
        port=settings["PORT"] or 5432,
        user=settings["USER"],
        password=settings["PASSWORD"] or None,
        autocommit=True,
        application_name="perfhub-test-blocker",
    )
