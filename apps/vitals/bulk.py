"""Bulk writes on PostgreSQL: per-session staging tables filled by binary COPY.

The worker writes tens of thousands of rows per batch. COPY in the binary
format costs about half of the text format, in this process (no number or
date is formatted as text) and in PostgreSQL's (none is parsed back); it
needs each column's type, read once per table from the catalogue.
"""

from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from django.db import connection
from psycopg.adapt import Dumper
from psycopg.postgres import types as postgres_types
from psycopg.pq import Format

JSONB_OID = postgres_types["jsonb"].oid


class _JsonbTextDumper(Dumper):
    """A jsonb value of a binary COPY: the format's version byte (1), then
    the JSON text, as PostgreSQL's jsonb_recv reads it. psycopg's own jsonb
    dumper only takes Python objects, and encodes them with the json module;
    this one also takes JSON text the caller made (the rollup writers build
    their sketches' text directly, far cheaper than encoding a dict per
    row)."""

    format = Format.BINARY
    oid = JSONB_OID

    def dump(self, obj: Any) -> bytes:
        if isinstance(obj, bytes):
            return b"\x01" + obj
        if isinstance(obj, str):
            return b"\x01" + obj.encode()
        # A dict or list: orjson encodes in a tenth of the json module's time.
        return b"\x01" + orjson.dumps(obj)


# (table, columns) -> the columns' type oids; stable for a process, since the
# staging tables are always created the same way.
_types: dict[tuple[str, tuple[str, ...]], list[int]] = {}


def stage_create(cursor: Any, stage: str, source: str, columns: Sequence[str]) -> None:
    """An empty per-session temporary table ``stage`` with ``columns`` as
    ``source`` has them, emptied at each commit."""
    cursor.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
        f"SELECT {', '.join(columns)} FROM {source} WITH NO DATA"
    )
    # Emptied at commit, but one transaction may fill it several times (a
    # rebuild does, and so does a caller's enclosing transaction).
    cursor.execute(f"DELETE FROM {stage}")


def copy_rows(cursor: Any, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """COPY ``rows`` into ``table`` in the binary format; returns their number.
    Values must be of the columns' Python types (int for integers, float or
    int for double precision, str for text); for jsonb, JSON text (str or
    UTF-8 bytes) or the dict or list to encode."""
    key = (table, tuple(columns))
    types = _types.get(key)
    if types is None:
        cursor.execute(
            "SELECT attname, atttypid::int FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0",
            [table],
        )
        oids = dict(cursor.fetchall())
        types = _types[key] = [oids[c] for c in columns]
    # On this cursor only, and only where a dumper is looked up by the
    # column's type (COPY after set_types), never by a value's.
    cursor.cursor.adapters.register_dumper(None, _JsonbTextDumper)
    count = 0
    # COPY runs on psycopg directly; its errors become Django's here, so
    # callers handle one family of database errors.
    with (
        connection.wrap_database_errors,
        cursor.cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)
            count += 1
    return count
