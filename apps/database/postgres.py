"""Small PostgreSQL helpers shared by the selectors and services."""

import re
from typing import Any

from django.db import DatabaseError, connection, transaction

_PLAIN_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_$]*$")


def quote_ident(name: str) -> str:
    """PostgreSQL's quote_ident, for the suggested statements PerfHub shows
    (they are never run, but they must be right when an operator pastes them)."""
    if _PLAIN_IDENTIFIER.match(name):
        return name
    return '"' + name.replace('"', '""') + '"'


def fetch_all(sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        columns = [col.name for col in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def fetch_value(sql: str, params: list[Any] | None = None) -> Any:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
        return row[0] if row else None


def statements_schema() -> str | None:
    """The schema pg_stat_statements is installed in, or None when it is not
    installed in this database."""
    return fetch_value(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
        " WHERE e.extname = 'pg_stat_statements'"
    )


def statements_status() -> dict[str, Any]:
    """Whether pg_stat_statements can be read here, and if not, exactly how
    to enable it (the degradation DESIGN.md promises)."""
    preloaded = "pg_stat_statements" in [
        lib.strip() for lib in str(fetch_value("SELECT current_setting('shared_preload_libraries')")).split(",")
    ]
    schema = statements_schema()
    steps = []
    if not preloaded:
        steps.append(
            "Add pg_stat_statements to shared_preload_libraries in postgresql.conf "
            "(or ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements', keeping any libraries "
            "already listed) and restart PostgreSQL."
        )
    if schema is None:
        steps.append(
            "Run CREATE EXTENSION IF NOT EXISTS pg_stat_statements; in this database as a superuser "
            "(or run PerfHub's migrations again, which create it when the server offers it)."
        )
    readable = False
    if preloaded and schema is not None:
        try:
            # A savepoint: a failed read must not abort the caller's transaction.
            with transaction.atomic():
                fetch_value(f"SELECT 1 FROM {quote_ident(schema)}.pg_stat_statements LIMIT 1")  # noqa: S608
            readable = True
        except DatabaseError as exc:
            steps.append(f"pg_stat_statements is installed but cannot be read: {exc}".strip())
    return {"available": readable, "schema": schema, "preloaded": preloaded, "enable_steps": steps}
