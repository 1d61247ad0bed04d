"""Job locks, so several worker replicas never run the same job at once.

On PostgreSQL a session-level advisory lock: it is released when the holder's
connection closes, so a killed worker never leaves a job locked. SQLite is
the single-host embedded default with one worker, where the database's own
write lock already serialises jobs; the lock there always succeeds.
"""

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection


def _lock_id(name: str) -> int:
    # pg advisory locks take a signed 64-bit key.
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def job_lock(name: str) -> Iterator[bool]:
    """Yield True if this process holds the lock named ``name`` for the
    duration of the block, False if another process holds it."""
    if connection.vendor != "postgresql":
        yield True
        return
    key = _lock_id(name)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        acquired = bool(cursor.fetchone()[0])
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
