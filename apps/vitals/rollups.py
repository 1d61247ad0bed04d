"""Turning metric rows into rollup rows.

A ``RollupDelta`` collects the change that a batch of raw rows makes to the
rollups (rows added, or taken out again when a metric is re-reported with a
new value) and applies it to the ``Rollup`` table in one pass. Since the
rollups are sums, applying the deltas of every batch gives the same rows as
building them from all raw rows at once (see ``rollups_rebuild``).
"""

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Model, Q
from django.utils import timezone

from apps.vitals.models import DIMENSION_GRAINS, DimensionRollup, Rating, Rollup
from apps.vitals.sketch import Sketch

# Minute buckets for the recent past, where dashboards zoom in; hour
# buckets beyond, where minute detail is no longer worth its rows.
MINUTE_HORIZON = timedelta(hours=48)

HOUR = 3600
DAY = 86400
WEEK = 7 * DAY
# The block sizes of DimensionRollup rows. Each divides the next, so any
# range of whole hours splits into at most a few blocks of each size
# (see ``blocks``).
LEVELS = (HOUR, 6 * HOUR, DAY, WEEK)
# Blocks are aligned on this Monday midnight (UTC), so weeks run Monday to
# Sunday and every smaller block starts on its own multiple.
BLOCK_ORIGIN = datetime(1970, 1, 5, tzinfo=UTC)

RollupKey = tuple[Any, ...]  # (site_id, bucket_seconds, bucket_start, *Rollup.DIMENSIONS)
# (site_id, dimension, bucket_seconds, bucket_start, name, value)
DimensionKey = tuple[int, str, int, datetime, str, str]


def block_start(moment: datetime, seconds: int) -> datetime:
    """The start of the block of ``seconds`` that ``moment`` falls in."""
    offset = (moment - BLOCK_ORIGIN).total_seconds() % seconds
    return moment - timedelta(seconds=offset)


def blocks(start: datetime, end: datetime, *, open_end: bool) -> list[tuple[int, datetime]]:
    """The fewest (block size, block start) pairs that cover [start, end)
    exactly: greedily the largest block that starts at the current point and
    fits. ``start`` must be on an hour. With ``open_end`` (the range ends
    now, so no data lies after ``end``) the last block may run past ``end``;
    otherwise ``end`` is rounded up to the hour."""
    if block_start(start, HOUR) != start:
        raise ValueError("blocks start on the hour")
    if not open_end and block_start(end, HOUR) != end:
        end = block_start(end, HOUR) + timedelta(seconds=HOUR)
    out: list[tuple[int, datetime]] = []
    point = start
    while point < end:
        for seconds in reversed(LEVELS):
            if block_start(point, seconds) != point:
                continue
            if open_end or point + timedelta(seconds=seconds) <= end:
                break
        else:  # pragma: no cover - an hour always fits an hour-aligned point
            raise AssertionError("no block fits")
        out.append((seconds, point))
        point += timedelta(seconds=seconds)
    return out


def bucket_for(occurred_at: datetime, *, now: datetime | None = None) -> tuple[int, datetime]:
    now = now or timezone.now()
    if now - occurred_at <= MINUTE_HORIZON:
        return Rollup.MINUTE, occurred_at.replace(second=0, microsecond=0)
    return Rollup.HOUR, occurred_at.replace(minute=0, second=0, microsecond=0)


@dataclass
class Aggregate:
    samples: int = 0
    weight: float = 0.0
    good: float = 0.0
    needs_improvement: float = 0.0
    poor: float = 0.0
    value_sum: float = 0.0
    sketch: Sketch = field(default_factory=Sketch)

    def merge(self, other: "Aggregate") -> None:
        self.samples += other.samples
        self.weight += other.weight
        self.good += other.good
        self.needs_improvement += other.needs_improvement
        self.poor += other.poor
        self.value_sum += other.value_sum
        self.sketch.merge(other.sketch)

    def add(self, value: float, rating: int, weight: float, sign: int) -> None:
        signed = weight * sign
        self.samples += sign
        self.weight += signed
        self.value_sum += value * signed
        if rating == Rating.GOOD:
            self.good += signed
        elif rating == Rating.NEEDS_IMPROVEMENT:
            self.needs_improvement += signed
        else:
            self.poor += signed
        self.sketch.add(value, signed)


class RollupDelta:
    """The change a batch makes to the Rollup rows and, derived from it, to
    the DimensionRollup rows. ``dimensions=False`` leaves the latter alone:
    compaction only regroups Rollup rows that were counted in them already."""

    def __init__(self, *, now: datetime | None = None, dimensions: bool = True) -> None:
        self.now = now or timezone.now()
        self.dimensions = dimensions
        self.aggregates: dict[RollupKey, Aggregate] = {}

    def add(self, row: Mapping[str, Any], sign: int = 1) -> None:
        """Count ``row`` (a dict with Metric's columns) in, or out with sign=-1."""
        seconds, start = bucket_for(row["occurred_at"], now=self.now)
        key = (row["site_id"], seconds, start, *(row[d] for d in Rollup.DIMENSIONS))
        aggregate = self.aggregates.get(key)
        if aggregate is None:
            aggregate = self.aggregates[key] = Aggregate()
        aggregate.add(row["value"], row["rating"], row["weight"], sign)

    def merge_rollup(self, rollup: Rollup) -> None:
        """Fold an existing rollup row into the bucket its start falls in
        now (compaction of minute rows into hour rows)."""
        seconds, start = bucket_for(rollup.bucket_start, now=self.now)
        key = (rollup.site_id, seconds, start, *(getattr(rollup, d) for d in Rollup.DIMENSIONS))
        aggregate = self.aggregates.get(key)
        if aggregate is None:
            aggregate = self.aggregates[key] = Aggregate()
        aggregate.merge(
            Aggregate(
                samples=rollup.samples,
                weight=rollup.weight,
                good=rollup.good,
                needs_improvement=rollup.needs_improvement,
                poor=rollup.poor,
                value_sum=rollup.value_sum,
                sketch=Sketch.from_json(rollup.sketch),
            )
        )

    def __len__(self) -> int:
        return len(self.aggregates)

    def dimension_aggregates(self) -> dict[DimensionKey, Aggregate]:
        """The DimensionRollup deltas: each Rollup delta counted once per
        dimension into its hour block, then the hour blocks into the larger
        ones. Folding the batch's few hour blocks, rather than every row into
        every level, keeps the cost per metric at one fold per dimension."""
        hourly: dict[DimensionKey, Aggregate] = {}
        name_at = 3 + Rollup.DIMENSIONS.index("name")
        positions = {d: 3 + Rollup.DIMENSIONS.index(d) for d in DIMENSION_GRAINS if d != "site"}
        for key, aggregate in self.aggregates.items():
            site_id, hour, name = key[0], block_start(key[2], HOUR), key[name_at]
            _fold(hourly, (site_id, "site", HOUR, hour, name, ""), aggregate)
            for dimension, position in positions.items():
                _fold(hourly, (site_id, dimension, HOUR, hour, name, key[position]), aggregate)
        out = dict(hourly)
        for (site_id, dimension, _, hour, name, value), aggregate in hourly.items():
            for seconds in LEVELS[1:]:
                _fold(out, (site_id, dimension, seconds, block_start(hour, seconds), name, value), aggregate)
        return out

    def apply(self) -> int:
        """Merge into the Rollup and DimensionRollup tables; returns the rows
        written. Call inside the transaction that wrote the raw rows, holding
        the site locks."""
        if not self.aggregates:
            return 0
        tables: list[tuple[type[Model], tuple[str, ...], Mapping[tuple[Any, ...], Aggregate]]] = [
            (Rollup, _ROLLUP_KEY, self.aggregates)
        ]
        if self.dimensions:
            tables.append((DimensionRollup, _DIMENSION_KEY, self.dimension_aggregates()))
        written = 0
        for model, key_fields, aggregates in tables:
            if connection.vendor == "postgresql":
                written += _apply_postgresql(model, key_fields, aggregates)
            else:
                written += _apply_portable(model, key_fields, aggregates)
        return written


_TOTALS = ("samples", "weight", "good", "needs_improvement", "poor", "value_sum")
_ROLLUP_KEY = ("site_id", "bucket_seconds", "bucket_start", *Rollup.DIMENSIONS)
_DIMENSION_KEY = ("site_id", "dimension", "bucket_seconds", "bucket_start", "name", "value")


def _fold(into: dict[Any, Aggregate], key: Any, aggregate: Aggregate) -> None:
    target = into.get(key)
    if target is None:
        target = into[key] = Aggregate()
    target.merge(aggregate)


def _apply_postgresql(
    model: type[Model], key_fields: tuple[str, ...], aggregates: Mapping[tuple[Any, ...], Aggregate]
) -> int:
    """COPY the deltas into a staging table and add them to the rollup
    rows in one INSERT ... ON CONFLICT: the database adds the counts and
    merges the sketches (vitals_sketch_merge, migration 0004), so no
    rollup row makes a round trip through Python."""
    table = model._meta.db_table
    stage = f"{table}_stage"
    columns = [*key_fields, *_TOTALS, "sketch"]
    key = ", ".join(key_fields)
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
            f"SELECT {', '.join(columns)} FROM {table} WITH NO DATA"
        )
        # Emptied at commit, but one transaction may apply several deltas
        # (a rebuild does, and so does a caller's enclosing transaction).
        cursor.execute(f"DELETE FROM {stage}")
        with (
            connection.wrap_database_errors,
            cursor.cursor.copy(f"COPY {stage} ({', '.join(columns)}) FROM STDIN") as copy,
        ):
            for row_key, agg in aggregates.items():
                copy.write_row([*row_key, *(getattr(agg, t) for t in _TOTALS), json.dumps(agg.sketch.to_json())])
        additions = ", ".join(f"{t} = {table}.{t} + EXCLUDED.{t}" for t in _TOTALS)
        cursor.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) "
            f"SELECT {', '.join(columns)} FROM {stage} "
            f"ON CONFLICT ({key}) DO UPDATE SET {additions}, "
            f"sketch = vitals_sketch_merge({table}.sketch, EXCLUDED.sketch)"
        )
        written = cursor.rowcount
        if any(agg.samples < 0 for agg in aggregates.values()):
            # Re-reported metrics were taken out: a bucket left empty goes.
            cursor.execute(
                f"DELETE FROM {table} r USING {stage} s WHERE r.samples <= 0 AND "
                + " AND ".join(f"r.{c} = s.{c}" for c in key_fields)
            )
    return written


def _apply_portable(
    model: type[Model], key_fields: tuple[str, ...], aggregates: Mapping[tuple[Any, ...], Aggregate]
) -> int:
    existing = _existing_rows(model, key_fields, aggregates)
    upserts: list[Model] = []
    emptied: list[int] = []
    for key, delta in aggregates.items():
        current = existing.get(key)
        merged = _merge(current, delta)
        if merged.samples <= 0:
            if current is not None:
                emptied.append(current.pk)
            continue
        upserts.append(
            model(
                **dict(zip(key_fields, key, strict=True)),
                **{t: getattr(merged, t) for t in _TOTALS},
                sketch=merged.sketch.to_json(),
            )
        )
    unique_fields = [f.removesuffix("_id") for f in key_fields]
    if upserts:
        model._default_manager.bulk_create(
            upserts,
            batch_size=500,
            update_conflicts=True,
            unique_fields=unique_fields,
            update_fields=[*_TOTALS, "sketch"],
        )
    if emptied:
        model._default_manager.filter(pk__in=emptied).delete()
    return len(upserts) + len(emptied)


def _merge(current: Any, delta: Aggregate) -> Aggregate:
    if current is None:
        return delta
    merged = Aggregate(**{t: getattr(current, t) for t in _TOTALS}, sketch=Sketch.from_json(current.sketch))
    merged.merge(delta)
    return merged


def _existing_rows(
    model: type[Model], key_fields: tuple[str, ...], aggregates: Iterable[tuple[Any, ...]]
) -> dict[tuple[Any, ...], Any]:
    """The rows with these keys. Read by the key's leading columns up to the
    bucket start (the unique index's prefix), then matched on the rest here:
    a batch touches few buckets, and one OR of many full keys would make a
    query too large to plan quickly."""
    wanted = set(aggregates)
    split = key_fields.index("bucket_start")
    starts: dict[tuple[Any, ...], set[datetime]] = {}
    for key in wanted:
        starts.setdefault(key[:split], set()).add(key[split])
    condition = Q()
    for prefix, bucket_starts in starts.items():
        condition |= Q(**dict(zip(key_fields[:split], prefix, strict=True)), bucket_start__in=bucket_starts)
    found: dict[tuple[Any, ...], Any] = {}
    for row in model._default_manager.filter(condition):
        key = tuple(getattr(row, f) for f in key_fields)
        if key in wanted:
            found[key] = row
    return found
