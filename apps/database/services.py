"""Writes of the database app: snapshots, their pruning, EXPLAIN and the
SQLite integrity check (the last two run statements chosen by an admin)."""

import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
import sqlparse
from django.db import DatabaseError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from apps.core.locks import job_lock
from apps.database.models import RelationSize, Snapshot, StatementStat, StatementText
from apps.database.postgres import fetch_all, fetch_value, quote_ident, statements_status
from apps.database.selectors import Window, is_postgresql, relation_sizes, statement_text

# Long enough for the 24-hour window and the day-over-day size growth, with
# room for a late worker.
SNAPSHOT_RETENTION = timedelta(hours=48)
# On-demand snapshots serve the 5-minute window (a read may take one a
# minute); past two hours the worker's, 5 minutes apart, are fine enough.
ON_DEMAND_RETENTION = timedelta(hours=2)

EXPLAIN_TIMEOUT_MS_DEFAULT = 5000
EXPLAIN_TIMEOUT_MS_MAX = 60_000
# Statements EXPLAIN accepts; anything else (DDL, COPY, transaction control)
# is refused before it reaches the server.
_EXPLAINABLE = {"SELECT", "WITH", "INSERT", "UPDATE", "DELETE", "MERGE", "VALUES", "TABLE"}
_PLACEHOLDER = re.compile(r"\$(\d+)")


def snapshot_take(*, on_demand: bool = False) -> Snapshot | None:
    """Record pg_stat_statements (this database's entries) and every
    relation's size. None on SQLite, which has neither."""
    if not is_postgresql():
        return None
    status = statements_status()
    statements: list[dict[str, Any]] = []
    reset_at = None
    if status["available"]:
        schema = quote_ident(status["schema"])
        statements = fetch_all(
            f"""
            SELECT queryid, sum(calls)::bigint AS calls, sum(total_exec_time)::float8 AS total_exec_time,
                   sum(rows)::bigint AS rows, min(query) AS query
            FROM {schema}.pg_stat_statements
            WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND queryid IS NOT NULL
            GROUP BY queryid
            """  # noqa: S608 (schema is the extension's, quoted)
        )
        try:
            with transaction.atomic():
                # pg_stat_statements 1.9 (PostgreSQL 14) and later.
                reset_at = fetch_value(f"SELECT stats_reset FROM {schema}.pg_stat_statements_info")  # noqa: S608
        except DatabaseError:
            reset_at = None
    relations = relation_sizes()
    with transaction.atomic():
        snapshot = Snapshot.objects.create(
            taken_at=timezone.now(),
            statements_reset_at=reset_at,
            has_statements=status["available"],
            on_demand=on_demand,
        )
        StatementStat.objects.bulk_create(
            [
                StatementStat(
                    snapshot=snapshot,
                    queryid=row["queryid"],
                    calls=row["calls"],
                    total_exec_time=row["total_exec_time"],
                    rows=row["rows"],
                )
                for row in statements
            ],
            batch_size=1000,
        )
        StatementText.objects.bulk_create(
            [StatementText(queryid=row["queryid"], query=row["query"]) for row in statements],
            batch_size=1000,
            ignore_conflicts=True,
        )
        RelationSize.objects.bulk_create(
            [
                RelationSize(snapshot=snapshot, kind=r["kind"], schema=r["schema"], name=r["name"], bytes=r["bytes"])
                for r in relations
            ],
            batch_size=1000,
        )
    return snapshot


def snapshots_prune(
    *, older_than: timedelta = SNAPSHOT_RETENTION, on_demand_older_than: timedelta = ON_DEMAND_RETENTION
) -> int:
    """Delete snapshots past their retention; returns how many."""
    now = timezone.now()
    old = Snapshot.objects.filter(
        Q(taken_at__lt=now - older_than) | Q(on_demand=True, taken_at__lt=now - on_demand_older_than)
    )
    # The children first, each in one DELETE, rather than the ORM's cascade
    # collecting thousands of rows per snapshot in memory.
    StatementStat.objects.filter(snapshot__in=old).delete()
    RelationSize.objects.filter(snapshot__in=old).delete()
    deleted, _ = old.delete()
    if deleted:
        StatementText.objects.exclude(queryid__in=StatementStat.objects.values("queryid")).delete()
    return deleted


def statements_snapshot_if_stale(*, window: Window) -> Snapshot | None:
    """Take a snapshot when the newest is older than the window's resolution.

    Several pollers may ask at once; the job lock lets one of them take it
    and the others read what is there.
    """
    if not is_postgresql():
        return None
    newest = Snapshot.objects.order_by("-taken_at").values_list("taken_at", flat=True).first()
    if newest is not None and timezone.now() - newest < window.resolution:
        return None
    with job_lock("job:database_snapshot") as acquired:
        if not acquired:
            return None
        return snapshot_take(on_demand=True)


# --- EXPLAIN ------------------------------------------------------------------------


class ExplainError(Exception):
    """A statement that cannot be explained, with the reason for the user."""


@dataclass(frozen=True)
class ExplainResult:
    sql: str
    plan: str
    mode: str  # "plain", "generic" (placeholders) or "analyze"
    timeout_ms: int


def _single_statement(sql: str) -> str:
    parts = [p.strip().rstrip(";").strip() for p in sqlparse.split(sql)]
    parts = [p for p in parts if p]
    if not parts:
        raise ExplainError("There is no statement to explain.")
    if len(parts) > 1:
        raise ExplainError("Paste exactly one statement; this text holds several.")
    statement = parts[0]
    first = statement.split(None, 1)[0].upper().lstrip("(")
    if first not in _EXPLAINABLE:
        raise ExplainError(
            f"A {first} statement cannot be explained; EXPLAIN takes SELECT, INSERT, UPDATE, DELETE, MERGE and VALUES."
        )
    return statement


def _placeholder_count(sql: str) -> int:
    # Placeholders inside string literals do not count; sqlparse tells them apart.
    numbers = [
        int(m.group(1))
        for token in sqlparse.parse(sql)[0].flatten()
        if token.ttype is not None and token.ttype in sqlparse.tokens.Name.Placeholder
        for m in [_PLACEHOLDER.fullmatch(token.value)]
        if m
    ]
    return max(numbers, default=0)


def explain_run(
    *, sql: str | None = None, queryid: int | None = None, analyze: bool = False, timeout_ms: int
) -> ExplainResult:
    """EXPLAIN one statement in a READ ONLY transaction that is always rolled
    back, under ``SET LOCAL statement_timeout``.

    1. The text comes from the snapshots (by queryid) or from an admin.
    2. It must be one explainable statement, checked here, and it is sent
       with the extended query protocol, where the server itself refuses a
       second statement (so "SELECT 1; COMMIT; DROP …" cannot end the
       read-only transaction).
    3. Normalised statements from pg_stat_statements carry $1 placeholders:
       PostgreSQL 16+ explains them with GENERIC_PLAN; before that they are
       PREPAREd with their types inferred and explained as EXECUTE with
       NULLs under plan_cache_mode = force_generic_plan, so the NULLs do not
       fold the plan away. They cannot be run with ANALYZE.
    4. With ANALYZE the statement really runs; a write is refused by the
       read-only transaction and anything else is rolled back.
    """
    if not is_postgresql():
        raise ExplainError("EXPLAIN is available on PostgreSQL only.")
    if (sql is None) == (queryid is None):
        raise ExplainError("Give either a statement or a queryid.")
    if queryid is not None:
        sql = statement_text(queryid=queryid)
        if sql is None:
            raise ExplainError(f"No statement with queryid {queryid} is known.")
    assert sql is not None  # noqa: S101 (narrowing for mypy; checked above)
    statement = _single_statement(sql)
    params = _placeholder_count(statement)
    if params and analyze:
        raise ExplainError(
            "This statement has $n placeholders (pg_stat_statements normalises values away), so it cannot be run "
            "with ANALYZE. Explain it without ANALYZE, or paste it with real values."
        )
    timeout_ms = max(1, min(int(timeout_ms), EXPLAIN_TIMEOUT_MS_MAX))
    options = "ANALYZE, BUFFERS" if analyze else ""
    mode = "analyze" if analyze else ("generic" if params else "plain")
    prepared = f"perfhub_explain_{uuid.uuid4().hex}"
    connection.ensure_connection()
    raw = connection.connection
    try:
        with transaction.atomic(), psycopg.Cursor(raw) as cursor:
            cursor.execute("SET TRANSACTION READ ONLY")
            cursor.execute(f"SET LOCAL statement_timeout = {timeout_ms}")
            if params and connection.pg_version >= 160000:  # type: ignore[attr-defined]
                cursor.execute(f"EXPLAIN (GENERIC_PLAN) {statement}", binary=True)
            elif params:
                cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                cursor.execute(f"PREPARE {prepared} AS {statement}", binary=True)
                nulls = ", ".join(["NULL"] * params)
                cursor.execute(f"EXPLAIN EXECUTE {prepared}({nulls})")
            else:
                cursor.execute(f"EXPLAIN ({options}) {statement}" if options else f"EXPLAIN {statement}", binary=True)
            plan = "\n".join(str(row[0]) for row in cursor.fetchall())
            # Whatever happened, nothing of it is kept.
            transaction.set_rollback(True)
    except psycopg.errors.QueryCanceled as exc:
        raise ExplainError(
            f"The statement ran longer than the {timeout_ms} ms statement timeout and was cancelled; "
            "nothing was changed."
        ) from exc
    except psycopg.errors.ReadOnlySqlTransaction as exc:
        raise ExplainError(
            f"Refused: EXPLAIN runs in a read-only transaction and this statement writes ({exc}). Nothing was changed."
        ) from exc
    except psycopg.errors.IndeterminateDatatype as exc:
        raise ExplainError(
            f"PostgreSQL {connection.pg_version // 10000} cannot infer the type of every $n placeholder "  # type: ignore[attr-defined]
            f"of this statement ({exc}), so it cannot build a generic plan; PostgreSQL 16's "
            "EXPLAIN (GENERIC_PLAN) can. Paste the statement with real values to explain it."
        ) from exc
    except psycopg.Error as exc:
        raise ExplainError(f"PostgreSQL could not explain this statement: {exc}".strip()) from exc
    finally:
        if params and connection.pg_version < 160000:  # type: ignore[attr-defined]
            # Prepared statements outlive the transaction; the pooled
            # connection must not keep ours.
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_prepared_statements WHERE name = %s", [prepared])
                if cursor.fetchone():
                    cursor.execute(f"DEALLOCATE {prepared}")
    return ExplainResult(sql=statement, plan=plan, mode=mode, timeout_ms=timeout_ms)


# --- SQLite ---------------------------------------------------------------------------


def sqlite_integrity_check(*, max_errors: int = 100) -> list[str]:
    """PRAGMA integrity_check: ["ok"] when the file is sound. It reads the
    whole file, so it runs on an admin's request only."""
    if connection.vendor != "sqlite":
        raise ValueError("The integrity check is for SQLite; PostgreSQL checks its own pages (data checksums).")
    with connection.cursor() as cursor:
        cursor.execute(f"PRAGMA integrity_check({int(max_errors)})")
        return [str(row[0]) for row in cursor.fetchall()]
