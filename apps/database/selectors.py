"""Reads behind the database page and ``GET /api/v1/performance/database/stats``.

On PostgreSQL: the pghero-class insights, from the statistics views and
from PerfHub's own snapshots of pg_stat_statements and relation sizes. On
SQLite: what SQLite can tell (file, pages, table sizes, indexes).
"""

import os
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from apps.database.metrics import connection_metrics_update, pool_metrics_update
from apps.database.models import RelationSize, Snapshot, StatementStat, StatementText
from apps.database.postgres import fetch_all, fetch_value, quote_ident, statements_schema, statements_status


@dataclass(frozen=True)
class Window:
    key: str
    label: str
    span: timedelta
    # The newest snapshot may be this old before a read takes a fresh one.
    resolution: timedelta


WINDOWS = {
    w.key: w
    for w in (
        Window("5m", "5 minutes", timedelta(minutes=5), timedelta(minutes=1)),
        Window("1h", "1 hour", timedelta(hours=1), timedelta(minutes=5)),
        Window("24h", "24 hours", timedelta(hours=24), timedelta(hours=1)),
    )
}
DEFAULT_WINDOW = "1h"

# Sections that only PostgreSQL can fill; the SQLite answer names them.
POSTGRESQL_ONLY = [
    "connections",
    "cache_hit_ratios",
    "slow_queries",
    "index_advice",
    "vacuum",
    "long_running",
    "sequences",
]

# pg_stat_activity states; the gauges report 0 for a state nobody is in
# rather than keeping the last non-zero value.
CONNECTION_STATES = (
    "active",
    "idle",
    "idle in transaction",
    "idle in transaction (aborted)",
    "fastpath function call",
    "disabled",
)

# A table is worth an index when it is big enough that a sequential scan
# costs real I/O, is scanned often, and mostly sequentially.
MISSING_INDEX_MIN_ROWS = 1000
MISSING_INDEX_MIN_SEQ_SCANS = 10
# Queries running (or transactions open) longer than this are listed.
LONG_RUNNING = timedelta(minutes=1)
# Sequences past this share of their limit are flagged.
SEQUENCE_WARN_FRACTION = 0.5
# PostgreSQL stops assigning transaction IDs before 2^31 (minus a safety
# margin); age(datfrozenxid) is measured against that.
XID_WRAPAROUND_LIMIT = 2**31 - 1
_INT_LIMITS = {"smallint": 2**15 - 1, "integer": 2**31 - 1, "bigint": 2**63 - 1}


def is_postgresql() -> bool:
    return connection.vendor == "postgresql"


# --- Connections and pool -----------------------------------------------------


def connection_stats() -> dict[str, Any]:
    rows = fetch_all(
        """
        SELECT coalesce(state, 'unknown') AS state, coalesce(nullif(application_name, ''), '(none)') AS application,
               count(*) AS connections
        FROM pg_stat_activity
        WHERE datname = current_database() AND backend_type = 'client backend'
        GROUP BY 1, 2
        ORDER BY 3 DESC, 1, 2
        """
    )
    by_state: dict[str, int] = dict.fromkeys(CONNECTION_STATES, 0)
    for row in rows:
        by_state[row["state"]] = by_state.get(row["state"], 0) + row["connections"]
    server_total = fetch_value("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
    max_connections = int(fetch_value("SELECT current_setting('max_connections')"))
    connection_metrics_update(by_state)
    return {
        "by_state": by_state,
        "by_state_and_application": rows,
        "total": sum(by_state.values()),
        "server_total": server_total,
        "max_connections": max_connections,
        "server_usage": round(server_total / max_connections, 4) if max_connections else None,
    }


def pool_stats() -> dict[str, Any]:
    """This process's psycopg pool (Django's ``OPTIONS["pool"]``): each
    gunicorn worker has its own, so the figures are per process."""
    pool = getattr(connection, "pool", None) if is_postgresql() else None
    if pool is None:
        return {"configured": False, "message": "no pool"}
    stats = pool.get_stats()
    size = int(stats.get("pool_size", 0))
    available = int(stats.get("pool_available", 0))
    result = {
        "configured": True,
        "min_size": int(stats.get("pool_min", 0)),
        "max_size": int(stats.get("pool_max", 0)),
        "size": size,
        "available": available,
        "in_use": max(size - available, 0),
        "waiting": int(stats.get("requests_waiting", 0)),
        "requests_total": int(stats.get("requests_num", 0)),
        "requests_errors": int(stats.get("requests_errors", 0)),
        "scope": "this process",
    }
    pool_metrics_update(result)
    return result


def cache_hit_ratios() -> dict[str, Any]:
    row = fetch_all(
        """
        SELECT
          (SELECT sum(heap_blks_hit)::float8 / nullif(sum(heap_blks_hit) + sum(heap_blks_read), 0)
             FROM pg_statio_user_tables) AS tables,
          (SELECT sum(idx_blks_hit)::float8 / nullif(sum(idx_blks_hit) + sum(idx_blks_read), 0)
             FROM pg_statio_user_indexes) AS indexes
        """
    )[0]
    return {k: (round(v, 4) if v is not None else None) for k, v in row.items()}


# --- Slow queries ---------------------------------------------------------------


def window_get(key: str) -> Window:
    return WINDOWS[key]


def _statement_rows(snapshot: Snapshot) -> dict[int, tuple[int, float, int]]:
    return {
        qid: (calls, total, rows)
        for qid, calls, total, rows in StatementStat.objects.filter(snapshot=snapshot).values_list(
            "queryid", "calls", "total_exec_time", "rows"
        )
    }


def _window_snapshots(window: Window) -> tuple[Snapshot | None, Snapshot | None]:
    """The newest snapshot and the one the window starts from: the newest at
    or before ``end - span``, else the oldest we have (a shorter window,
    reported as such)."""
    with_statements = Snapshot.objects.filter(has_statements=True)
    end = with_statements.order_by("-taken_at").first()
    if end is None:
        return None, None
    start = (
        with_statements.filter(taken_at__lte=end.taken_at - window.span).order_by("-taken_at").first()
        or with_statements.filter(taken_at__lt=end.taken_at).order_by("taken_at").first()
    )
    return start, end


def slow_queries(*, window: Window, limit: int | None = None) -> dict[str, Any]:
    """Statements of this database ranked by execution time over ``window``,
    from the difference between two snapshots.

    Counters can go backwards: someone called pg_stat_statements_reset(), or
    the extension evicted an entry (pg_stat_statements.max) and re-added it.
    Then the later snapshot's counters are everything that happened since the
    restart, the best available estimate for the window, and the entry (or
    the whole result, for a reset) is marked.
    """
    status = statements_status()
    result: dict[str, Any] = {
        "available": status["available"],
        "enable_steps": status["enable_steps"],
        "window": window.key,
        "from": None,
        "to": None,
        "covers_full_window": False,
        "stats_reset_in_window": False,
        "total_time_ms": 0.0,
        "total_calls": 0,
        "statements": [],
        "message": "",
    }
    if not status["available"]:
        result["message"] = "pg_stat_statements is not available. " + " ".join(status["enable_steps"])
        return result
    start, end = _window_snapshots(window)
    if start is None or end is None:
        result["message"] = (
            "Only one snapshot so far; the slow queries appear once the next one is taken "
            "(the worker takes one every 5 minutes)."
        )
        return result
    reset = bool(start.statements_reset_at != end.statements_reset_at and end.statements_reset_at)
    before, after = _statement_rows(start), _statement_rows(end)
    statements: list[dict[str, Any]] = []
    for qid, (calls, total, rows) in after.items():
        old = before.get(qid)
        restarted = reset or (old is not None and (calls < old[0] or total < old[1]))
        if old is None or restarted:
            d_calls, d_total, d_rows = calls, total, rows
        else:
            d_calls, d_total, d_rows = calls - old[0], total - old[1], max(rows - old[2], 0)
        if d_calls <= 0:
            continue
        statements.append(
            {
                "queryid": qid,
                "calls": d_calls,
                "total_time_ms": round(d_total, 3),
                "mean_time_ms": round(d_total / d_calls, 3),
                "rows": d_rows,
                # Its counters went backwards in the window (see docstring).
                "counters_restarted": restarted,
            }
        )
    total_time = sum(s["total_time_ms"] for s in statements)
    texts = dict(
        StatementText.objects.filter(queryid__in=[s["queryid"] for s in statements]).values_list("queryid", "query")
    )
    for s in statements:
        s["query"] = texts.get(s["queryid"], "")
        s["share"] = round(s["total_time_ms"] / total_time, 4) if total_time else 0.0
    statements.sort(key=lambda s: (-s["total_time_ms"], s["queryid"]))
    result.update(
        {
            "from": start.taken_at,
            "to": end.taken_at,
            "covers_full_window": end.taken_at - start.taken_at >= window.span,
            "stats_reset_in_window": reset,
            "total_time_ms": round(total_time, 3),
            "total_calls": sum(s["calls"] for s in statements),
            "statements": statements[:limit] if limit else statements,
        }
    )
    if reset:
        result["message"] = (
            f"pg_stat_statements was reset at {end.statements_reset_at:%Y-%m-%d %H:%M:%S} UTC; "
            "the figures cover the time since."
        )
    return result


def statement_text(*, queryid: int) -> str | None:
    """The normalised text of a statement, from the newest snapshot or, for
    one not snapshotted yet, from pg_stat_statements itself."""
    stored = StatementText.objects.filter(queryid=queryid).values_list("query", flat=True).first()
    if stored is not None:
        return stored
    schema = statements_schema()
    if schema is None or not is_postgresql():
        return None
    try:
        with transaction.atomic():
            return fetch_value(
                f"SELECT query FROM {quote_ident(schema)}.pg_stat_statements"  # noqa: S608
                " WHERE queryid = %s AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
                " LIMIT 1",
                [queryid],
            )
    except DatabaseError:
        return None


# --- Index advice ---------------------------------------------------------------


def _indexes() -> list[dict[str, Any]]:
    return fetch_all(
        """
        SELECT n.nspname AS schema, t.relname AS "table", c.relname AS name, i.indisunique AS is_unique,
               i.indisprimary AS is_primary, i.indisvalid AS is_valid, i.indkey::text AS columns,
               i.indclass::text AS opclasses, am.amname AS method,
               coalesce(pg_get_expr(i.indexprs, i.indrelid), '') AS expressions,
               coalesce(pg_get_expr(i.indpred, i.indrelid), '') AS predicate,
               pg_relation_size(c.oid) AS bytes, coalesce(s.idx_scan, 0) AS scans,
               pg_get_indexdef(c.oid) AS definition,
               EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = c.oid) AS backs_constraint,
               c.relkind = 'I' AS is_partitioned
        FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_class t ON t.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace
        JOIN pg_am am ON am.oid = c.relam
        LEFT JOIN pg_stat_user_indexes s ON s.indexrelid = i.indexrelid
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
        ORDER BY n.nspname, t.relname, c.relname
        """
    )


def _qualified(schema: str, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}"


def _duplicates(indexes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Indexes another index makes redundant: the same definition, or (for
    plain b-trees) a leading prefix of another's columns, as pghero reports."""
    found = []
    for idx in indexes:
        if idx["is_primary"] or idx["backs_constraint"] or idx["expressions"]:
            continue
        cols = idx["columns"].split()
        for other in indexes:
            if other is idx or (other["schema"], other["table"]) != (idx["schema"], idx["table"]):
                continue
            if other["method"] != idx["method"] or other["predicate"] != idx["predicate"] or other["expressions"]:
                continue
            other_cols = other["columns"].split()
            same = other_cols == cols and other["opclasses"] == idx["opclasses"]
            if same:
                # Of two identical indexes keep the one a constraint needs,
                # else the unique one, else the first by name.
                keep_other = (
                    other["backs_constraint"]
                    or other["is_primary"]
                    or (other["is_unique"] and not idx["is_unique"])
                    or (other["is_unique"] == idx["is_unique"] and other["name"] < idx["name"])
                )
                if not keep_other:
                    continue
            elif not (
                idx["method"] == "btree"
                and not idx["is_unique"]
                and len(other_cols) > len(cols)
                and other_cols[: len(cols)] == cols
                and other["opclasses"].split()[: len(cols)] == idx["opclasses"].split()
            ):
                continue
            found.append(
                {
                    "schema": idx["schema"],
                    "table": idx["table"],
                    "index": idx["name"],
                    "definition": idx["definition"],
                    "covered_by": other["name"],
                    "covered_by_definition": other["definition"],
                    "bytes": idx["bytes"],
                    "suggestion": f"DROP INDEX CONCURRENTLY {_qualified(idx['schema'], idx['name'])};",
                }
            )
            break
    return found


# Column compared with a parameter in a WHERE/AND/OR condition of a
# normalised statement: "WHERE t.col = $1", "AND col IN ($2, $3)". A
# heuristic, as pghero's own suggestions are; the operator decides.
_FILTER = re.compile(
    r"\b(?:WHERE|AND|OR)\s+(?:\"?\w+\"?\.)?\"?(\w+)\"?\s*(?:=|<=|>=|<|>|\bIN\b|\bLIKE\b)\s*\(?\s*\$\d+",
    re.IGNORECASE,
)


def _statements_by_table(tables: list[str]) -> dict[str, list[dict[str, Any]]]:
    """For each of ``tables``, the 200 most called statements of this
    database that name it, in one query whatever the number of tables."""
    schema = statements_schema()
    if schema is None:
        return {}
    try:
        with transaction.atomic():
            rows = fetch_all(
                "SELECT t.name, s.query, s.calls FROM unnest(%s::text[], %s::text[]) AS t(name, pattern)"  # noqa: S608
                " CROSS JOIN LATERAL ("
                f" SELECT query, calls FROM {quote_ident(schema)}.pg_stat_statements"
                " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
                " AND query ~* t.pattern ORDER BY calls DESC LIMIT 200) s",
                [tables, [rf"\m{re.escape(table)}\M" for table in tables]],
            )
    except DatabaseError:
        return {}
    by_table: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_table.setdefault(row["name"], []).append(row)
    return by_table


def _filtered_columns(statements: list[dict[str, Any]], columns: set[str], indexed_leads: set[str]) -> list[str]:
    """Columns that ``statements`` filter on, most called first, leaving
    out those an index already leads with."""
    counts: Counter[str] = Counter()
    for row in statements:
        for col in _FILTER.findall(row["query"]):
            name = col.lower() if col.lower() in columns else col
            if name in columns and name not in indexed_leads:
                counts[name] += row["calls"]
    return [col for col, _ in counts.most_common()]


def missing_index_candidates() -> list[dict[str, Any]]:
    # The same few queries however many tables qualify: each table's
    # columns and the columns its indexes lead with come along as arrays,
    # and one query fetches the statements naming any of them.
    tables = fetch_all(
        """
        SELECT s.schemaname AS schema, s.relname AS "table", s.seq_scan AS seq_scans,
               s.seq_tup_read AS rows_read_sequentially, coalesce(s.idx_scan, 0) AS index_scans,
               s.n_live_tup AS live_rows,
               array(SELECT attname::text FROM pg_attribute
                     WHERE attrelid = s.relid AND attnum > 0 AND NOT attisdropped) AS columns,
               array(SELECT a.attname::text FROM pg_index i JOIN pg_attribute a
                     ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                     WHERE i.indrelid = s.relid) AS indexed_leads
        FROM pg_stat_user_tables s
        WHERE s.n_live_tup >= %s AND s.seq_scan >= %s AND s.seq_scan > coalesce(s.idx_scan, 0)
        ORDER BY s.seq_tup_read DESC
        LIMIT 50
        """,
        [MISSING_INDEX_MIN_ROWS, MISSING_INDEX_MIN_SEQ_SCANS],
    )
    statements = _statements_by_table(sorted({table["table"] for table in tables}))
    for table in tables:
        columns = set(table.pop("columns"))
        indexed_leads = set(table.pop("indexed_leads"))
        filtered = _filtered_columns(statements.get(table["table"], []), columns, indexed_leads)
        if filtered:
            column = filtered[0]
            index_name = f"{table['table']}_{column}_idx"[:63]
            table["column"] = column
            table["suggestion"] = (
                f"CREATE INDEX CONCURRENTLY {quote_ident(index_name)} "
                f"ON {_qualified(table['schema'], table['table'])} ({quote_ident(column)});"
            )
        else:
            table["column"] = None
            table["suggestion"] = (
                f"CREATE INDEX CONCURRENTLY ON {_qualified(table['schema'], table['table'])} (<column>);"
                " -- put the column the frequent queries filter on"
            )
        table["avg_rows_per_seq_scan"] = table["rows_read_sequentially"] // max(table["seq_scans"], 1)
    return tables


def index_advice() -> dict[str, Any]:
    indexes = _indexes()
    unused = [
        {
            "schema": i["schema"],
            "table": i["table"],
            "index": i["name"],
            "bytes": i["bytes"],
            "definition": i["definition"],
            "suggestion": f"DROP INDEX CONCURRENTLY {_qualified(i['schema'], i['name'])};",
        }
        for i in indexes
        # A partitioned index is never scanned itself; its partitions' indexes are.
        if i["scans"] == 0
        and i["is_valid"]
        and not (i["is_unique"] or i["is_primary"] or i["backs_constraint"] or i["is_partitioned"])
    ]
    unused.sort(key=lambda i: -i["bytes"])
    invalid = [
        {
            "schema": i["schema"],
            "table": i["table"],
            "index": i["name"],
            "bytes": i["bytes"],
            "definition": i["definition"],
            # An index a CREATE INDEX CONCURRENTLY still builds is invalid too.
            "suggestion": f"DROP INDEX CONCURRENTLY {_qualified(i['schema'], i['name'])}; -- then create it again,"
            " unless a CREATE INDEX CONCURRENTLY is still building it",
        }
        for i in indexes
        if not i["is_valid"]
    ]
    stats_reset = fetch_value("SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()")
    return {
        "unused": unused,
        "duplicate": _duplicates(indexes),
        "invalid": invalid,
        "missing": missing_index_candidates(),
        "usage_counted_since": stats_reset,
    }


# --- Sizes ------------------------------------------------------------------------


_RELATIONS_SQL = """
    SELECT n.nspname AS schema, c.relname AS name,
           CASE WHEN c.relkind = 'i' THEN 'index' ELSE 'table' END AS kind,
           CASE WHEN c.relkind = 'i' THEN pg_relation_size(c.oid) ELSE pg_table_size(c.oid) END AS bytes,
           CASE WHEN c.relkind = 'i' THEN NULL ELSE pg_indexes_size(c.oid) END AS index_bytes,
           CASE WHEN c.relkind = 'i' THEN (SELECT t.relname FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid
                                             WHERE x.indexrelid = c.oid) END AS "table",
           c.reltuples::bigint AS estimated_rows
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'm', 'i', 'p')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
"""


def relation_sizes() -> list[dict[str, Any]]:
    return fetch_all(_RELATIONS_SQL + " ORDER BY bytes DESC, n.nspname, c.relname")


def sizes(*, growth_over: timedelta = timedelta(hours=24)) -> dict[str, Any]:
    """Table and index sizes, with growth against the snapshot closest to
    ``growth_over`` ago (or the oldest one kept)."""
    relations = relation_sizes()
    now = timezone.now()
    base = (
        Snapshot.objects.filter(taken_at__lte=now - growth_over).order_by("-taken_at").first()
        or Snapshot.objects.order_by("taken_at").first()
    )
    previous: dict[tuple[str, str, str], int] = {}
    if base is not None:
        previous = {
            (kind, schema, name): size
            for kind, schema, name, size in RelationSize.objects.filter(snapshot=base).values_list(
                "kind", "schema", "name", "bytes"
            )
        }
    for rel in relations:
        old = previous.get((rel["kind"], rel["schema"], rel["name"]))
        rel["growth_bytes"] = rel["bytes"] - old if old is not None else None
    return {
        "database_bytes": fetch_value("SELECT pg_database_size(current_database())"),
        "growth_since": base.taken_at if base is not None else None,
        "tables": [r for r in relations if r["kind"] == "table"],
        "indexes": [r for r in relations if r["kind"] == "index"],
    }


# --- Vacuum, activity, sequences -----------------------------------------------------


def vacuum_stats() -> dict[str, Any]:
    tables = fetch_all(
        """
        SELECT s.schemaname AS schema, s.relname AS "table", s.n_live_tup AS live_rows, s.n_dead_tup AS dead_rows,
               round(s.n_dead_tup::numeric / nullif(s.n_live_tup + s.n_dead_tup, 0), 4)::float8 AS dead_fraction,
               s.n_mod_since_analyze AS modified_since_analyze,
               s.last_vacuum, s.last_autovacuum, s.last_analyze, s.last_autoanalyze,
               s.vacuum_count, s.autovacuum_count, s.analyze_count, s.autoanalyze_count,
               age(c.relfrozenxid) AS xid_age
        FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
        ORDER BY n_dead_tup DESC, xid_age DESC
        """
    )
    database_age = int(fetch_value("SELECT age(datfrozenxid) FROM pg_database WHERE datname = current_database()"))
    freeze_max_age = int(fetch_value("SELECT current_setting('autovacuum_freeze_max_age')"))
    return {
        "wraparound": {
            "xid_age": database_age,
            "limit": XID_WRAPAROUND_LIMIT,
            "margin": XID_WRAPAROUND_LIMIT - database_age,
            "used_fraction": round(database_age / XID_WRAPAROUND_LIMIT, 6),
            "autovacuum_freeze_max_age": freeze_max_age,
        },
        "tables": tables,
    }


def long_running_queries(*, older_than: timedelta = LONG_RUNNING) -> list[dict[str, Any]]:
    """Statements running, or transactions open, longer than ``older_than``,
    and every backend another one blocks, whatever its age."""
    return fetch_all(
        """
        SELECT pid, usename AS "user", coalesce(nullif(application_name, ''), '(none)') AS application,
               state, wait_event_type, wait_event,
               extract(epoch FROM now() - query_start)::float8 AS query_seconds,
               extract(epoch FROM now() - xact_start)::float8 AS transaction_seconds,
               pg_blocking_pids(pid) AS blocked_by,
               left(query, 2000) AS query
        FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
          AND state <> 'idle'
          AND (now() - coalesce(xact_start, query_start) > %s OR cardinality(pg_blocking_pids(pid)) > 0)
        ORDER BY coalesce(xact_start, query_start)
        """,
        [older_than],
    )


def sequences() -> list[dict[str, Any]]:
    """Sequences by how much of their range is used, against the smaller of
    the sequence's own maximum and the column type it feeds (a bigint
    sequence behind an integer column overflows at 2^31)."""
    rows = fetch_all(
        """
        SELECT s.schemaname AS schema, s.sequencename AS sequence, s.last_value, s.max_value, s.increment_by,
               t.relname AS "table", a.attname AS "column", format_type(a.atttypid, a.atttypmod) AS column_type
        FROM pg_sequences s
        JOIN pg_namespace n ON n.nspname = s.schemaname
        JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.sequencename
        LEFT JOIN pg_depend d ON d.objid = c.oid AND d.classid = 'pg_class'::regclass
             AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
        LEFT JOIN pg_class t ON t.oid = d.refobjid
        LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
        WHERE s.increment_by > 0
        """
    )
    for row in rows:
        limit = min(row["max_value"], _INT_LIMITS.get(row["column_type"] or "", row["max_value"]))
        used = row["last_value"] or 0
        row["limit"] = limit
        row["used_fraction"] = round(used / limit, 6) if limit else 0.0
        row["remaining"] = limit - used
        row["near_limit"] = row["used_fraction"] >= SEQUENCE_WARN_FRACTION
    rows.sort(key=lambda r: (-r["used_fraction"], r["schema"], r["sequence"]))
    return rows


# --- SQLite -------------------------------------------------------------------------


def _sqlite_rows(sql: str) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return list(cursor.fetchall())


def sqlite_stats() -> dict[str, Any]:
    path = Path(str(connection.settings_dict["NAME"]))
    files = {suffix or "main": path.with_name(path.name + suffix) for suffix in ("", "-wal", "-shm")}
    file_bytes = {name: os.path.getsize(p) for name, p in files.items() if p.exists()}
    page_size = _sqlite_rows("PRAGMA page_size")[0][0]
    page_count = _sqlite_rows("PRAGMA page_count")[0][0]
    freelist = _sqlite_rows("PRAGMA freelist_count")[0][0]
    objects = _sqlite_rows(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE type IN ('table', 'index') ORDER BY name"
    )
    try:
        # dbstat exists only when SQLite was compiled with SQLITE_ENABLE_DBSTAT_VTAB.
        with transaction.atomic():
            sizes_by_name = dict(_sqlite_rows("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"))
        size_source = "dbstat"
    except DatabaseError:
        sizes_by_name = {}
        size_source = "row counts (dbstat is not compiled into this SQLite)"
    tables = []
    for kind, name, _table, _sql in objects:
        if kind != "table":
            continue
        quoted = '"' + name.replace('"', '""') + '"'
        rows = _sqlite_rows(f"SELECT count(*) FROM {quoted}")[0][0]  # noqa: S608 (name from sqlite_master)
        tables.append({"name": name, "rows": rows, "bytes": sizes_by_name.get(name)})
    tables.sort(key=lambda t: (-(t["bytes"] or 0), -t["rows"], t["name"]))
    indexes = [
        {"name": name, "table": table, "definition": sql or "(automatic index)", "bytes": sizes_by_name.get(name)}
        for kind, name, table, sql in objects
        if kind == "index"
    ]
    return {
        "file_bytes": file_bytes,
        "page_size": page_size,
        "page_count": page_count,
        "freelist_count": freelist,
        "free_bytes": freelist * page_size,
        "size_source": size_source,
        "tables": tables,
        "indexes": indexes,
        "sqlite_version": _sqlite_rows("SELECT sqlite_version()")[0][0],
    }


# --- Everything ---------------------------------------------------------------------


def server_info() -> dict[str, Any]:
    if not is_postgresql():
        return {"vendor": "sqlite", "version": _sqlite_rows("SELECT sqlite_version()")[0][0]}
    return {
        "vendor": "postgresql",
        "version": fetch_value("SHOW server_version"),
        "version_num": connection.pg_version,  # type: ignore[attr-defined]
        "database": fetch_value("SELECT current_database()"),
    }


def database_stats(*, window: Window, limit: int = 50) -> dict[str, Any]:
    """Every section of the stats API. Reading the slow queries may take a
    snapshot first when the newest is older than the window's resolution
    (``statements_snapshot_if_stale``), so the answer is never stale by more
    than that."""
    from apps.database.services import statements_snapshot_if_stale

    server = server_info()
    if server["vendor"] != "postgresql":
        return {"server": server, "sqlite": sqlite_stats(), "pool": pool_stats(), "postgresql_only": POSTGRESQL_ONLY}
    statements_snapshot_if_stale(window=window)
    return {
        "server": server,
        "connections": connection_stats(),
        "pool": pool_stats(),
        "cache_hit_ratios": cache_hit_ratios(),
        "slow_queries": slow_queries(window=window, limit=limit),
        "index_advice": index_advice(),
        "sizes": sizes(),
        "vacuum": vacuum_stats(),
        "long_running": long_running_queries(),
        "sequences": sequences(),
    }


def newest_snapshot_at() -> datetime | None:
    return Snapshot.objects.order_by("-taken_at").values_list("taken_at", flat=True).first()
