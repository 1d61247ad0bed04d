"""The beacon stream: Redis between the endpoint and the database.

The endpoint appends each beacon's metric records to a Redis stream (one
XADD, durable once Redis acknowledges it); workers read it through a
consumer group, write the records to PostgreSQL, and acknowledge and delete
entries only after the transaction commits. Entries left pending by a
worker that died are claimed by another after ``CLAIM_IDLE_MS``.
Re-delivery is harmless: a metric already stored with the same value
changes nothing (see services.metrics_store).
"""

import gc
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import hiredis
import orjson
import redis
from django.conf import settings
from django.core.signals import setting_changed
from django.db import DatabaseError
from django.dispatch import receiver

from apps.core.ratelimit import Verdict, Window, local_counts

logger = logging.getLogger(__name__)

STREAM = "perfhub:vitals:beacons"
DEAD_LETTERS = "perfhub:vitals:dead"
GROUP = "vitals-writers"
CLAIM_IDLE_MS = 60_000


@contextmanager
def gc_tuned_for_batches() -> Iterator[None]:
    """Keep the cyclic garbage collector out of the way while a process
    writes batches of metrics (the worker, vitals_demo). A batch is tens of
    thousands of dicts, tuples and arrays, alive until it is written and in
    no reference cycle; reference counting frees them. Automatic collections
    only walk them again and again: even once every 10,000 allocations they
    took a seventh of the worker's CPU in bench/drain.py. So automatic
    collection is off meanwhile, and the caller collects (``gc.collect()``)
    between batches, at best when none is alive; the objects of start-up are
    frozen out of its way, as in the gunicorn workers."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


def redis_client() -> Any:
    from django_redis import get_redis_connection

    return get_redis_connection("default")


def encode_records(records: list[dict[str, Any]]) -> bytes:
    """One beacon's records as one stream entry (see encode_beacon), with
    the fields they all share found by comparing them."""
    first, *others = records or [{}]
    shared = {
        name: value
        for name, value in first.items()
        # The same type too: 1 and 1.0 are equal, but not the same JSON.
        if all(name in other and type(other[name]) is type(value) and other[name] == value for other in others)
    }
    own = [{name: value for name, value in record.items() if name not in shared} for record in records]
    return encode_beacon(shared, own)


def encode_beacon(shared: dict[str, Any], own: list[dict[str, Any]]) -> bytes:
    """One beacon's records as one JSON object: the fields they all share
    (page, client, arrival: most of them) once under "c", each record's own
    under "m". Half the bytes of a list of whole records, in Redis and for
    the worker to parse. orjson writes dates and times in ISO 8601, as
    isoformat does, and decodes in a third of the json module's time (a
    tenth of the worker's, before)."""
    return orjson.dumps({"c": shared, "m": own})


def decode_records(payload: bytes) -> list[dict[str, Any]]:
    data = orjson.loads(payload)
    if isinstance(data, list):
        # A list of whole records, as entries were appended before the
        # shared fields were written once.
        shared, own = {}, data
    elif isinstance(data, dict) and isinstance(data.get("c"), dict) and isinstance(data.get("m"), list):
        shared, own = data["c"], data["m"]
    else:
        raise ValueError("a stream entry must hold a beacon's records")
    records = []
    for fields in own:
        if not isinstance(fields, dict):
            raise ValueError("a stream entry's record must be an object")
        record = {**shared, **fields}
        record["day"] = date.fromisoformat(record["day"])
        record["occurred_at"] = datetime.fromisoformat(record["occurred_at"])
        record["received_at"] = datetime.fromisoformat(record["received_at"])
        records.append(record)
    return records


# Counts a beacon against its rate limits and appends it to the stream only
# if none is exceeded, atomically, in one round trip: the way a beacon is
# counted once a counter nears its limit (apps.core.ratelimit.LocalCounts).
# KEYS: the limits' counters, then the stream. ARGV: the counters' lifetime,
# each limit's allowance, the amount to add to each counter, then the entry.
# Returns the counts, and the entry id after them when appended.
_APPEND_WITHIN_LIMITS = """
local limits = #KEYS - 1
local replies = {}
local allowed = true
for i = 1, limits do
  local count = redis.call('INCRBY', KEYS[i], ARGV[limits + 1 + i])
  redis.call('EXPIRE', KEYS[i], ARGV[1], 'NX')
  replies[i] = count
  if count > tonumber(ARGV[i + 1]) then
    allowed = false
  end
end
if allowed then
  replies[limits + 1] = redis.call('XADD', KEYS[limits + 1], '*', 'r', ARGV[2 * limits + 2])
end
return replies
"""


_APPEND_WITHIN_LIMITS_SHA = hashlib.sha1(_APPEND_WITHIN_LIMITS.encode(), usedforsecurity=False).hexdigest()

# Each thread's own connection for the append. redis-py's client passes each
# command through its pool (a lock, a fork check, a queue), its retry and
# argument layers and its Script object, all on the beacon's path: with one
# connection kept per thread, the call is a send and a read. bench/ingest.py
# measured the endpoint 5% faster (see bench/README.md).
_connections = threading.local()
# Bumped when the CACHES setting changes (tests override it), so that each
# thread's connection is made again for the new Redis.
_connections_generation = 0


@receiver(setting_changed)
def _forget_connections(*, setting: str, **kwargs: Any) -> None:
    global _connections_generation
    if setting == "CACHES":
        _connections_generation += 1


def _append_connection() -> Any:
    kept = getattr(_connections, "kept", None)
    if kept is not None and kept[0] == _connections_generation and kept[1].pid == os.getpid():
        return kept[1]
    # Made by the cache's pool, so with its address, timeouts and
    # credentials, but outside it: no other command ever takes it.
    connection = redis_client().connection_pool.make_connection()
    _connections.kept = (_connections_generation, connection)
    return connection


def _append_round_trip(commands: list[tuple[Any, ...]]) -> list[Any]:
    """The replies to ``commands``, sent together on this thread's
    connection."""
    connection = _append_connection()
    try:
        return _send(connection, commands)
    except redis.ConnectionError:
        # Redis closed the connection while it was idle (a restart): once
        # more on a new one, which the send opens. Had the first attempt
        # been appended after all, its metrics would still be stored once:
        # each (site, metric id) is.
        return _send(connection, commands)


def _send(connection: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    try:
        # Packed by hiredis, as redis-py packs it, without redis-py's
        # packer, which splits the command name and checks each argument
        # again on every call (timeit: 7.1 against 3.0 microseconds).
        connection.send_packed_command([hiredis.pack_command(command) for command in commands])
        replies: list[Any] = []
        error: redis.ResponseError | None = None
        for _ in commands:
            # Every reply is read, an error's too, so that the next
            # round trip on this connection starts with its own.
            try:
                replies.append(connection.read_response())
            except redis.ResponseError as exc:
                error = error or exc
                replies.append(exc)
    except (redis.ConnectionError, redis.TimeoutError):
        connection.disconnect()  # a reply may be half read
        raise
    if error is not None:
        raise error
    return replies


def _append_counted(
    window: Window, increments: list[int], flush: dict[str, int], payload: bytes
) -> tuple[list[int], dict[str, int]]:
    """Count and append atomically (the script), having added ``flush`` to
    its counters, in one round trip; the counts of ``window``'s counters,
    and of ``flush``'s."""
    lifetime = window.seconds + 1
    counted: list[tuple[Any, ...]] = []
    for key, amount in flush.items():
        counted.append((b"INCRBY", key, amount))
        counted.append((b"EXPIRE", key, lifetime, b"NX"))
    keys = [*window.keys, STREAM]
    arguments = (
        len(keys),
        *keys,
        lifetime,
        *(limit.per_window for limit in window.limits),
        *increments,
        payload,
    )
    try:
        replies = _append_round_trip([*counted, (b"EVALSHA", _APPEND_WITHIN_LIMITS_SHA, *arguments)])
    except redis.exceptions.NoScriptError:
        # Redis restarted or was told to SCRIPT FLUSH: EVAL runs the script
        # and caches it again. The counts before it were added already (their
        # totals are learned at the next flush).
        replies = _append_round_trip([(b"EVAL", _APPEND_WITHIN_LIMITS, *arguments)])
    window_counts = [int(count) for count in replies[-1][: len(window.keys)]]
    # Each flushed counter's INCRBY reply, the one before its EXPIRE's.
    return window_counts, {key: int(count) for key, count in zip(flush, replies[:-1:2], strict=False)}


def stream_append(shared: dict[str, Any], own: list[dict[str, Any]], counters: Window) -> Verdict:
    """Count one beacon against the rate limits of ``counters`` and append
    its records (as encode_beacon has them; one XADD, durable once Redis
    acknowledges it) unless one of them is exceeded: counted in this
    process while its counters are far below their limits, atomically with
    the append in Redis otherwise (see LocalCounts)."""
    claim = local_counts.claim(counters)
    if claim.refused is not None:
        return Verdict(claim.refused, counters.retry_after)
    payload = encode_beacon(shared, own)
    if claim.exact is None:
        _append_round_trip([(b"XADD", STREAM, b"*", b"r", payload)])
        return Verdict(None, counters.retry_after)
    window_counts, flushed = _append_counted(counters, claim.exact, claim.flush or {}, payload)
    local_counts.learned(counters.start, {**flushed, **dict(zip(counters.keys, window_counts, strict=True))})
    return counters.verdict(window_counts)


def stream_backlog() -> int:
    """Entries not yet written to the database (read or not)."""
    return int(redis_client().xlen(STREAM))


# How long one poll keeps reading ahead while the stream has more: the
# worker's loop runs its heartbeat and periodic jobs between polls, and its
# heartbeat counts as stale after three missed beats (apps.resilience.health).
POLL_SECONDS = 5.0


@dataclass
class _Batch:
    """Stream entries read and decoded, their records prepared for ``store``."""

    ids: list[bytes]
    metrics: int
    prepared: Any


class StreamConsumer:
    """One member of the consumer group.

    ``prepare`` turns a batch of records into what ``store`` takes (by
    default, the records themselves); it must not use the database, since it
    runs on a helper thread. ``store`` writes a batch and raises on failure;
    it runs in the consumer's own thread, which holds its database connection.
    """

    def __init__(
        self,
        *,
        store: Callable[[Any], object],
        prepare: Callable[[list[dict[str, Any]]], Any] | None = None,
        name: str | None = None,
        # 50,000 metrics: each hour, day and week block a batch touches is
        # rewritten once per batch, so larger batches rewrite fewer of them
        # per metric (a fifth fewer than with 5,000 entries).
        batch_size: int = 10_000,
        block_ms: int = 1000,
    ) -> None:
        self.store = store
        self.prepare = prepare or (lambda records: records)
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.batch_size = batch_size
        self.block_ms = block_ms
        # Its own connection: the cache's socket timeout (a second) is
        # shorter than a blocking read of an idle stream.
        self.client: Any = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=block_ms / 1000 + 10, socket_connect_timeout=5
        )
        # After a failed write, our own pending entries are retried first.
        self._retry_own_pending = True
        self._reader: ThreadPoolExecutor | None = None

    def ensure_group(self) -> None:
        try:
            # From id 0: entries appended before the group existed are read too.
            self.client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except Exception as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def poll(self) -> int:
        """Read and write batches while the stream has more, for up to
        POLL_SECONDS; returns the metrics written.

        1. Our own pending entries (left by a failed write) go first, one
           batch per poll, on their own.
        2. Then new entries: while one batch is written (this thread mostly
           waits on PostgreSQL, which releases the GIL) the next one is read,
           decoded and prepared on a helper thread, so the Python work of a
           batch costs no time of its own.
        3. Every batch read is written before poll returns: entries are
           pending only while they are being written, or after a failure.
        """
        if self._retry_own_pending:
            batch = self._read("0", block_ms=None)
            if batch.ids:
                return self._write(batch)
            self._retry_own_pending = False
        batch = self._read(">", block_ms=self.block_ms)
        written = 0
        deadline = time.monotonic() + POLL_SECONDS
        while batch.ids:
            following = None
            if time.monotonic() < deadline:
                if self._reader is None:
                    self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vitals-stream-read")
                following = self._reader.submit(self._read, ">", block_ms=None)
            try:
                written += self._write(batch)
            finally:
                # On failure the entries it read are ours, pending, and
                # retried first by the next poll.
                if following is not None:
                    wait([following])
            if following is None:
                break
            batch = following.result()
        return written

    def reclaim(self) -> int:
        """Take over entries another consumer read but never acknowledged."""
        _, entries, *_ = self.client.xautoclaim(
            STREAM, GROUP, self.name, min_idle_time=CLAIM_IDLE_MS, start_id="0-0", count=self.batch_size
        )
        if entries:
            logger.info("claimed %d pending stream entries from dead consumers", len(entries))
        return self._write(self._decoded(entries))

    def _read(self, start: str, *, block_ms: int | None) -> _Batch:
        response = self.client.xreadgroup(GROUP, self.name, {STREAM: start}, count=self.batch_size, block=block_ms)
        return self._decoded(response[0][1] if response else [])

    def _decoded(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> _Batch:
        records: list[dict[str, Any]] = []
        good_ids, bad = [], []
        for entry_id, fields in entries:
            try:
                records.extend(decode_records(fields[b"r"]))
                good_ids.append(entry_id)
            except (KeyError, ValueError, TypeError) as exc:
                bad.append((entry_id, fields, str(exc)))
        for entry_id, fields, error in bad:
            # Kept, not lost: an operator can inspect and replay them.
            logger.error("stream entry %s cannot be decoded (%s); moved to %s", entry_id, error, DEAD_LETTERS)
            self.client.xadd(DEAD_LETTERS, {**fields, b"error": error.encode(), b"id": entry_id})
            self._ack([entry_id])
        if not good_ids:
            return _Batch(ids=[], metrics=0, prepared=None)
        return _Batch(ids=good_ids, metrics=len(records), prepared=self.prepare(records))

    def _write(self, batch: _Batch) -> int:
        if not batch.ids:
            return 0
        try:
            self.store(batch.prepared)
        except DatabaseError:
            # Unacknowledged entries stay pending and are retried; nothing
            # is lost while the database is away.
            self._retry_own_pending = True
            raise
        self._ack(batch.ids)
        return batch.metrics

    def _ack(self, ids: list[bytes]) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.xack(STREAM, GROUP, *ids)
        pipe.xdel(STREAM, *ids)
        pipe.execute()
