import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice
from operator import itemgetter
from typing import Any

import pybreaker
from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from apps.core.ratelimit import Limit, Verdict, current_window, hit
from apps.resilience import breakers
from apps.resilience.breakers import redis_stream
from apps.vitals.beacon import REPORTED_BEFORE, ParsedBeacon
from apps.vitals.bulk import copy_rows, stage_create
from apps.vitals.models import AttributionRollup, DimensionRollup, Metric, Rollup, RouteRule, Site, new_public_key
from apps.vitals.normalize import validate_route_pattern
from apps.vitals.partitions import drop_partitions_before, ensure_partitions
from apps.vitals.rollups import MINUTE_HORIZON, WEEK, RollupDelta, block_start
from apps.vitals.selectors import rum_snippet_forget, site_cache_key
from apps.vitals.stream import stream_append

logger = logging.getLogger(__name__)

# The columns of a raw metric row, in COPY order (attribution last, see
# metrics_prepare).
COLUMNS = (
    "site_id",
    "day",
    "occurred_at",
    "received_at",
    "metric_id",
    "pageview",
    "name",
    "value",
    "rating",
    "weight",
    "route",
    "path",
    "host",
    "release",
    "navigation_type",
    "connection",
    "device_class",
    "browser",
    "browser_major",
    "os",
    "country",
    "attribution",
)
_ROW_KEY = ("site_id", "day", "metric_id")
# Columns a later report of the same metric replaces; the rest (and so the
# row's time bucket and dimensions) stay those of the first report.
_REPLACED = ("value", "rating", "received_at", "attribution")


@dataclass(frozen=True)
class StoreResult:
    inserted: int
    replaced: int
    unchanged: int
    rollups_written: int


def _site_lock_key(site_id: int) -> int:
    return int.from_bytes(hashlib.sha256(f"vitals:site:{site_id}".encode()).digest()[:8], "big", signed=True)


def _lock_sites(site_ids: Iterable[int]) -> None:
    """Serialise writers per site for the rest of the transaction, so two
    workers never merge into the same rollup row at once. Sorted, so that
    two batches with the same sites cannot deadlock. SQLite has one writer
    at a time already."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for site_id in sorted(set(site_ids)):
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_site_lock_key(site_id)])


@dataclass
class PreparedBatch:
    """A batch of metric records made ready for ``metrics_write`` without the
    database (``metrics_prepare``): deduplicated, and its rollup delta summed
    as if every metric were new, which it nearly always is."""

    latest: dict[tuple[Any, ...], dict[str, Any]]
    delta: RollupDelta
    # PostgreSQL: the rows of ``latest`` as COPY sends them, first reports
    # (apps.vitals.beacon.REPORTED_BEFORE) apart from the others.
    first_reports: list[tuple[Any, ...]] = field(default_factory=list)
    later_reports: list[tuple[Any, ...]] = field(default_factory=list)


def metrics_prepare(*, records: Sequence[dict[str, Any]], now: datetime | None = None) -> PreparedBatch:
    """The Python half of ``metrics_store``; it touches no database, so the
    stream consumer runs it for the next batch on a helper thread while the
    current batch is being written (apps.vitals.stream)."""
    # Within the batch the latest report of each metric wins.
    latest = dict(zip(map(itemgetter(*_ROW_KEY), records), records, strict=True))
    delta = RollupDelta(now=now)
    delta.add_all(latest.values())
    delta.prepare()
    batch = PreparedBatch(latest=latest, delta=delta)
    if connection.vendor == "postgresql":
        # Made here, so that the thread that writes the batch (and holds the
        # transaction) only sends them; the attribution is encoded on the
        # way (bulk.copy_rows).
        row = itemgetter(*COLUMNS)
        for record in latest.values():
            (batch.later_reports if record.get(REPORTED_BEFORE, True) else batch.first_reports).append(row(record))
    return batch


def metrics_store(*, records: Sequence[dict[str, Any]], now: datetime | None = None) -> StoreResult:
    """Write metric records (dicts with Metric's columns) and update their
    rollups, in one transaction."""
    return metrics_write(batch=metrics_prepare(records=records, now=now))


def metrics_write(*, batch: PreparedBatch) -> StoreResult:
    """Write a prepared batch: raw rows and rollups, in one transaction.

    1. New rows are inserted. PostgreSQL: first reports by COPY, the rest
       by COPY into a staging table and INSERT ... ON CONFLICT DO NOTHING
       (see _insert_new_postgresql); the unique index tells which were
       stored already, and only those are read back, so that the common
       batch, all new, reads nothing (a lookup of every key is planned from
       statistics, which a partition being filled does not have yet).
       Elsewhere every key is read first.
    2. The site locks are taken (PostgreSQL; SQLite has one writer at a
       time already). Only the rest needs them, so the workers of a
       deployment insert their raw rows at the same time.
    3. The batch's delta counted every metric as new; those stored already
       are taken out again by a second, small delta (the correction).
    4. A metric reported again with a new value is taken out of its rollup
       with its old value and put back with the new one, and its row
       updated; one re-delivered with the same value changes nothing (it is
       counted in and out again, a change of zero).
    5. The rollup delta and its correction are merged into the rollup rows.

    Why step 1 needs no lock: the unique index alone keeps two workers from
    inserting one metric twice (the second waits for the first to commit,
    then finds it stored). And a worker holding a lock never waits for one
    still inserting: an insert waits only for another's uncommitted insert
    of the same key, and under the lock a worker inserts nothing new; it
    updates rows committed before it took the lock, which inserts do not
    lock. Two inserting workers wait for each other only if each holds a
    metric the other has too, in the opposite order (a later report ahead
    of its first in the stream); PostgreSQL breaks that deadlock by rolling
    one batch back, which is retried (apps.vitals.stream).
    """
    latest = batch.latest
    if not latest:
        return StoreResult(0, 0, 0, 0)
    with transaction.atomic():
        ensure_partitions({key[1] for key in latest})
        postgresql = connection.vendor == "postgresql"
        # Elsewhere every key is read.
        already = _insert_new_postgresql(batch) if postgresql else set(latest)
        _lock_sites(key[0] for key in latest)
        stored = _stored_rows(list(already))
        # The same moment as the delta's: a metric near the minute horizon
        # is taken out of the bucket it was counted in.
        correction = RollupDelta(now=batch.delta.now)
        fresh, changed = [], []
        for key, record in latest.items():
            old = stored.get(key)
            if old is None:
                fresh.append(record)
                continue
            correction.add(record, -1)
            if old["value"] != record["value"]:
                changed.append(record)
                correction.add(old, -1)
                # The new report's value and attribution, the first one's
                # time bucket and dimensions.
                correction.add(
                    {**old, "value": record["value"], "rating": record["rating"], "attribution": record["attribution"]}
                )
        if postgresql:
            # The rows inserted above are written already.
            if already:
                _write_postgresql([r for r in fresh + changed if tuple(r[k] for k in _ROW_KEY) in already])
        else:
            _write_portable(fresh, changed)
        written = batch.delta.apply(correction)
    return StoreResult(
        inserted=len(fresh),
        replaced=len(changed),
        unchanged=len(latest) - len(fresh) - len(changed),
        rollups_written=written,
    )


_STORED_COLUMNS = (
    "site_id",
    "day",
    "metric_id",
    "occurred_at",
    "value",
    "rating",
    "weight",
    "attribution",
    *Rollup.DIMENSIONS,
)


def _stored_rows(keys: list[tuple[Any, ...]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    if not keys:
        return rows
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {', '.join(_STORED_COLUMNS)} FROM vitals_metric "
                "WHERE (site_id, day, metric_id) IN "
                "(SELECT * FROM unnest(%s::bigint[], %s::date[], %s::varchar[]))",
                [[k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]],
            )
            for values in cursor.fetchall():
                row = dict(zip(_STORED_COLUMNS, values, strict=True))
                # Django has psycopg leave jsonb as text; its JSONField decodes it.
                row["attribution"] = json.loads(row["attribution"]) if row["attribution"] else {}
                rows[(row["site_id"], row["day"], row["metric_id"])] = row
        return rows
    by_site_day: dict[tuple[int, Any], list[str]] = {}
    for site_id, day, metric_id in keys:
        by_site_day.setdefault((site_id, day), []).append(metric_id)
    for (site_id, day), metric_ids in by_site_day.items():
        for start in range(0, len(metric_ids), 500):
            chunk = metric_ids[start : start + 500]
            for row in Metric.objects.filter(site_id=site_id, day=day, metric_id__in=chunk).values(*_STORED_COLUMNS):
                rows[(row["site_id"], row["day"], row["metric_id"])] = row
    return rows


def _insert_new_postgresql(batch: PreparedBatch) -> set[tuple[Any, ...]]:
    """Insert the batch's rows not stored yet; returns the keys of the
    others, stored already.

    First reports are COPYed straight into vitals_metric, in a savepoint:
    none can be stored yet, so COPY, half the cost of an INSERT ... ON
    CONFLICT from a staging table, nearly always succeeds. When one was
    stored after all (a stream entry delivered again after a failed
    acknowledgement, or a client that said first report twice), the unique
    index refuses the COPY, the savepoint undoes it, and those rows go the
    way of the others.

    The others (later reports) are COPYed into the staging table, and those
    not stored yet inserted from it. The staging table keeps every one of
    them for _write_postgresql."""
    later = batch.later_reports
    if batch.first_reports:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                copy_rows(cursor, "vitals_metric", COLUMNS, batch.first_reports)
        except IntegrityError:
            logger.info("a batch's first reports were stored already; writing them as later reports")
            later = batch.first_reports + later
    if not later:
        return set()
    with connection.cursor() as cursor:
        # Per session, emptied at each commit: the staging area for COPY.
        stage_create(cursor, "vitals_metric_stage", "vitals_metric", COLUMNS)
        copy_rows(cursor, "vitals_metric_stage", COLUMNS, later)
        # The rows not inserted, found by PostgreSQL (an anti-join of the
        # staging table with the inserted keys): a batch with none stored
        # then sends nothing back, where returning the inserted keys would
        # make a Python tuple per metric.
        key = ", ".join(_ROW_KEY)
        cursor.execute(
            f"WITH inserted AS (INSERT INTO vitals_metric ({', '.join(COLUMNS)}) "
            f"SELECT {', '.join(COLUMNS)} FROM vitals_metric_stage "
            f"ON CONFLICT ({key}) DO NOTHING RETURNING {key}) "
            f"SELECT {key} FROM vitals_metric_stage s WHERE NOT EXISTS (SELECT FROM inserted i WHERE "
            + " AND ".join(f"i.{c} = s.{c}" for c in _ROW_KEY)
            + ")"
        )
        return {tuple(row) for row in cursor.fetchall()}


def _write_postgresql(records: list[dict[str, Any]]) -> None:
    """Write ``records``, already in the staging table, over the stored rows
    with their keys."""
    if not records:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM vitals_metric_stage WHERE (site_id, day, metric_id) NOT IN "
            "(SELECT * FROM unnest(%s::bigint[], %s::date[], %s::varchar[]))",
            [[r["site_id"] for r in records], [r["day"] for r in records], [r["metric_id"] for r in records]],
        )
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _REPLACED)
        cursor.execute(
            f"INSERT INTO vitals_metric ({', '.join(COLUMNS)}) "
            f"SELECT {', '.join(COLUMNS)} FROM vitals_metric_stage "
            f"ON CONFLICT (site_id, day, metric_id) DO UPDATE SET {updates}"
        )


def _write_portable(fresh: list[dict[str, Any]], changed: list[dict[str, Any]]) -> None:
    Metric.objects.bulk_create(
        [Metric(**{c: v for c, v in record.items() if c != REPORTED_BEFORE}) for record in fresh], batch_size=500
    )
    for record in changed:
        Metric.objects.filter(site_id=record["site_id"], day=record["day"], metric_id=record["metric_id"]).update(
            **{c: record[c] for c in _REPLACED}
        )


def rollups_rebuild(*, site: Site, since: datetime, until: datetime | None = None, now: datetime | None = None) -> int:
    """Recompute the rollups of ``site`` from its raw rows for the whole
    weeks (Monday to Sunday, UTC) from ``since`` to ``until``; returns the
    rollup rows written. Rollups are a pure function of the raw rows, so this
    repairs any drift and fills rollups for raw rows loaded by other means.
    Whole weeks, because a week block of DimensionRollup must be rebuilt from
    all of its raw rows or not at all; raw rows already dropped by retention
    are gone from the rebuilt rollups too."""
    now = now or timezone.now()
    start = block_start(since, WEEK)
    end = block_start(until or now, WEEK) + timedelta(seconds=WEEK)
    written = 0
    with transaction.atomic():
        _lock_sites([site.pk])
        Rollup.objects.filter(site=site, bucket_start__gte=start, bucket_start__lt=end).delete()
        DimensionRollup.objects.filter(site=site, bucket_start__gte=start, bucket_start__lt=end).delete()
        AttributionRollup.objects.filter(site=site, bucket_start__gte=start, bucket_start__lt=end).delete()
        for rows in _raw_rows_in_time_order(site, start, end):
            # Summed and written as the worker's batches are (RollupDelta),
            # in chunks large enough that each block row is merged a few
            # times, not once per thousand rows.
            delta = RollupDelta(now=now)
            for row in rows:
                delta.add(row)
            written += delta.apply()
    return written


# The columns RollupDelta reads of a raw row.
_ROLLED_UP = ("site_id", "occurred_at", "value", "rating", "weight", "attribution", *Rollup.DIMENSIONS)
REBUILD_CHUNK = 50_000


def _raw_rows_in_time_order(site: Site, start: datetime, end: datetime) -> Iterator[list[dict[str, Any]]]:
    """``site``'s raw rows from ``start`` to ``end`` in time order, so that
    each chunk touches the blocks of a short span (vitals_metric_site_time
    serves the order), in chunks of REBUILD_CHUNK. PostgreSQL: read by a
    server-side cursor as plain tuples, without the ORM's per-value
    converters; elsewhere through the ORM."""
    if connection.vendor != "postgresql":
        rows = (
            Metric.objects.filter(site=site, occurred_at__gte=start, occurred_at__lt=end)
            .order_by("occurred_at")
            .values(*_ROLLED_UP)
            .iterator(chunk_size=5000)
        )
        while chunk := list(islice(rows, REBUILD_CHUNK)):
            yield chunk
        return
    with connection.chunked_cursor() as cursor:
        cursor.execute(
            f"SELECT {', '.join(_ROLLED_UP)} FROM vitals_metric "
            "WHERE site_id = %s AND occurred_at >= %s AND occurred_at < %s ORDER BY occurred_at",
            [site.pk, start, end],
        )
        while values := cursor.fetchmany(REBUILD_CHUNK):
            chunk = [dict(zip(_ROLLED_UP, row, strict=True)) for row in values]
            for row in chunk:
                # Django has psycopg leave jsonb as text; its JSONField decodes it.
                row["attribution"] = json.loads(row["attribution"]) if row["attribution"] else {}
            yield chunk


def rollups_compact(*, now: datetime | None = None) -> int:
    """Fold minute rollups older than the minute horizon into hour rollups;
    returns the minute rows folded."""
    now = now or timezone.now()
    horizon = (now - MINUTE_HORIZON).replace(second=0, microsecond=0)
    folded = 0
    for site_id in (
        Rollup.objects.filter(bucket_seconds=Rollup.MINUTE, bucket_start__lt=horizon)
        .values_list("site_id", flat=True)
        .distinct()
    ):
        with transaction.atomic():
            _lock_sites([site_id])
            minutes = Rollup.objects.filter(site_id=site_id, bucket_seconds=Rollup.MINUTE, bucket_start__lt=horizon)
            # Only Rollup rows change bucket; DimensionRollup rows counted
            # these metrics already.
            delta = RollupDelta(now=now, dimensions=False)
            for rollup in minutes.iterator(chunk_size=2000):
                delta.merge_rollup(rollup)
                folded += 1
            minutes.delete()
            delta.apply()
    return folded


def metrics_drop_expired(*, now: datetime | None = None) -> dict[str, int]:
    """Apply each site's raw-data retention. Partitions older than the
    longest retention are dropped whole; rows of sites with a shorter
    retention are deleted from the partitions that remain."""
    now = now or timezone.now()
    sites = list(Site.objects.only("pk", "retention_days"))
    if not sites:
        return {"partitions_dropped": 0, "rows_deleted": 0}
    longest = max(s.retention_days for s in sites)
    dropped = drop_partitions_before((now - timedelta(days=longest)).date())
    deleted = 0
    with connection.cursor() as cursor:
        for site in sites:
            horizon = (now - timedelta(days=site.retention_days)).date()
            cursor.execute("DELETE FROM vitals_metric WHERE site_id = %s AND day < %s", [site.pk, horizon])
            deleted += max(cursor.rowcount, 0)
    return {"partitions_dropped": len(dropped), "rows_deleted": deleted}


def site_create(
    *,
    name: str,
    allowed_origins: list[str],
    sample_rate: float = 1.0,
    retention_days: int = 30,
    kept_query_params: list[str] | None = None,
    route_rules: Sequence[tuple[str, str]] = (),
) -> Site:
    for pattern, _ in route_rules:
        validate_route_pattern(pattern)
    with transaction.atomic():
        site = Site(
            name=name,
            allowed_origins=allowed_origins,
            sample_rate=sample_rate,
            retention_days=retention_days,
            kept_query_params=kept_query_params or [],
        )
        site.full_clean()
        site.save()
        RouteRule.objects.bulk_create(
            RouteRule(site=site, position=position, pattern=pattern, route=route)
            for position, (pattern, route) in enumerate(route_rules)
        )
    return site


def site_rotate_key(*, site: Site) -> str:
    """Give ``site`` a new public key; pages with the old key stop reporting
    (within the endpoint's 30-second per-process cache) until their snippet
    is updated."""
    old_key = site.public_key
    site.public_key = new_public_key()
    site.save(update_fields=["public_key", "updated_at"])
    _forget_site_caches(site, old_key)
    return site.public_key


def _forget_site_caches(site: Site, public_key: str) -> None:
    # The shared copy would otherwise let a rotated-out key in during a
    # database outage; PerfHub's own snippet carries the key and sample rate.
    cache.delete(site_cache_key(public_key))
    if site.is_builtin:
        rum_snippet_forget()


def site_update(
    *,
    site: Site,
    name: str,
    allowed_origins: list[str],
    sample_rate: float,
    retention_days: int,
    kept_query_params: list[str],
    route_rules: Sequence[tuple[str, str]],
) -> Site:
    """Change a site's settings and replace its route rules, in order, in one
    transaction. The built-in site keeps its name and its (implicit) origins."""
    for pattern, _ in route_rules:
        validate_route_pattern(pattern)
    with transaction.atomic():
        if not site.is_builtin:
            site.name = name
            site.allowed_origins = allowed_origins
        site.sample_rate = sample_rate
        site.retention_days = retention_days
        site.kept_query_params = kept_query_params
        site.full_clean()
        site.save()
        RouteRule.objects.filter(site=site).delete()
        RouteRule.objects.bulk_create(
            RouteRule(site=site, position=position, pattern=pattern, route=route)
            for position, (pattern, route) in enumerate(route_rules)
        )
    _forget_site_caches(site, site.public_key)
    return site


# Beacon rate limits count per minute.
BEACON_RATE_WINDOW = 60


class RateLimited(Exception):
    def __init__(self, verdict: Verdict) -> None:
        super().__init__(f"rate limit {verdict.refused} exceeded")
        self.verdict = verdict


def beacon_ingest(*, beacon: ParsedBeacon, limits: Sequence[Limit] = ()) -> str:
    """Make a beacon's accepted records durable, counting it against
    ``limits``; returns where they went.

    With Redis configured, into the beacon stream (the worker writes them to
    the database), counted as stream_append counts them; when Redis fails, or
    its breaker is open, straight into the database instead. On the embedded
    default, into the database. Raises RateLimited, having stored nothing,
    when the beacon exceeds a limit, and any other error if the records
    could not be made durable anywhere.
    """
    if settings.REDIS_URL:
        try:
            verdict = redis_stream.call(
                stream_append, beacon.shared, beacon.own, current_window(limits, window=BEACON_RATE_WINDOW)
            )
        except pybreaker.CircuitBreakerError:
            pass
        except Exception:
            logger.warning("beacon stream unavailable; writing to the database", exc_info=True)
        else:
            if verdict.refused is not None:
                raise RateLimited(verdict)
            return "stream"
        _check_limits(limits)
        # The fallback has its own breaker: with Redis and PostgreSQL both
        # failing, answer 503 at once rather than wait on the database too.
        breakers.breaker("database").call(metrics_store, records=beacon.records)
        return "database"
    _check_limits(limits)
    metrics_store(records=beacon.records)
    return "database"


def beacon_count(*, limits: Sequence[Limit]) -> Verdict:
    """Count a beacon that will not be stored (refused, or from a bot)
    against ``limits``: a flood of those is limited too."""
    return hit(limits, window=BEACON_RATE_WINDOW)


def _check_limits(limits: Sequence[Limit]) -> None:
    verdict = beacon_count(limits=limits)
    if verdict.refused is not None:
        raise RateLimited(verdict)
