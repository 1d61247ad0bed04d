"""Daily partitions of the raw metric table on PostgreSQL.

The worker creates partitions a few days ahead; a write for a day without a
partition (a late beacon, the demo command writing history) creates it on
the spot. Retention drops whole partitions: a DROP TABLE is instant and
leaves no dead rows to vacuum, unlike a DELETE of millions of rows.
"""

import re
from collections.abc import Iterable
from datetime import date, timedelta

from django.db import connection, transaction

PARENT = "vitals_metric"
_NAME = re.compile(r"^vitals_metric_p(\d{8})$")

# Partitions known to exist in this process, so the common case costs no query.
_known: set[date] = set()
# The advisory lock of partition creation (pg advisory locks take a 64-bit key).
_CREATE_LOCK = int.from_bytes(b"vitalspt", "big", signed=True)


def partition_name(day: date) -> str:
    return f"{PARENT}_p{day:%Y%m%d}"


def partitioned() -> bool:
    return connection.vendor == "postgresql"


def ensure_partitions(days: Iterable[date]) -> list[date]:
    """Create the partitions for ``days`` that do not exist yet; returns the
    days created. A no-op off PostgreSQL."""
    if not partitioned():
        return []
    missing = sorted(set(days) - _known)
    if not missing:
        return []
    created = []
    with transaction.atomic(), connection.cursor() as cursor:
        # Two workers creating the same partition at once both pass IF NOT
        # EXISTS, and the second fails (DuplicateTable): they take turns,
        # until the transaction ends, and look again once it is their turn.
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CREATE_LOCK])
        existing = set(existing_partitions())
        for day in missing:
            if day not in existing:
                cursor.execute(
                    f"CREATE TABLE IF NOT EXISTS {partition_name(day)} PARTITION OF {PARENT} "
                    "FOR VALUES FROM (%s) TO (%s)",
                    [day, day + timedelta(days=1)],
                )
                created.append(day)
            # Remembered only once committed: a rolled-back transaction takes
            # its CREATE TABLE with it.
            transaction.on_commit(lambda day=day: _known.add(day))  # type: ignore[misc]
    return created


def existing_partitions() -> list[date]:
    if not partitioned():
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s",
            [PARENT],
        )
        names = [row[0] for row in cursor.fetchall()]
    days = []
    for name in names:
        match = _NAME.match(name)
        if match:
            days.append(date(int(match.group(1)[:4]), int(match.group(1)[4:6]), int(match.group(1)[6:])))
    return sorted(days)


def drop_partitions_before(day: date) -> list[date]:
    """Drop every partition holding only days before ``day``."""
    if not partitioned():
        return []
    dropped = []
    with connection.cursor() as cursor:
        for existing in existing_partitions():
            if existing < day:
                cursor.execute(f"DROP TABLE IF EXISTS {partition_name(existing)}")
                _known.discard(existing)
                dropped.append(existing)
    return dropped


def forget_known_partitions() -> None:
    """For tests that drop the schema under a running process."""
    _known.clear()
