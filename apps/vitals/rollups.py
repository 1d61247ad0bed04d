"""Turning metric rows into rollup rows.

A ``RollupDelta`` collects the change that a batch of raw rows makes to the
rollups (rows added, or taken out again when a metric is re-reported with a
new value) and applies it to the ``Rollup`` table in one pass. Since the
rollups are sums, applying the deltas of every batch gives the same rows as
building them from all raw rows at once (see ``rollups_rebuild``).
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from django.db import connection
from django.db.models import Model, Q
from django.utils import timezone

from apps.vitals.attribution import attribution_parts
from apps.vitals.beacon import THRESHOLDS
from apps.vitals.models import DIMENSION_GRAINS, AttributionRollup, DimensionRollup, Rating, Rollup
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
# (site_id, bucket_seconds, bucket_start, name, route, kind, key)
AttributionKey = tuple[int, int, datetime, str, str, str, str]


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
    """A Rollup or DimensionRollup row's totals, or the change to them."""

    samples: int = 0
    weight: float = 0.0
    good: float = 0.0
    needs_improvement: float = 0.0
    poor: float = 0.0
    value_sum: float = 0.0
    sketch: Sketch = field(default_factory=Sketch)

    # Columns the database adds up on conflict, and JSON columns it merges
    # with the named SQL function.
    SUMS: ClassVar = ("samples", "weight", "good", "needs_improvement", "poor", "value_sum")
    MERGES: ClassVar = {"sketch": "vitals_sketch_merge"}

    def columns(self) -> dict[str, Any]:
        return {**{c: getattr(self, c) for c in self.SUMS}, "sketch": self.sketch.to_json()}

    @classmethod
    def from_values(cls, values: Sequence[Any]) -> "Aggregate":
        """From a row's SUMS then MERGES columns, in that order."""
        *sums, sketch = values
        return cls(**dict(zip(cls.SUMS, sums, strict=True)), sketch=Sketch.from_json(sketch))

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


@dataclass
class AttributionAggregate:
    """An AttributionRollup row's totals, or the change to them."""

    samples: int = 0
    weight: float = 0.0
    value_sum: float = 0.0
    excess_sum: float = 0.0
    phase_sums: dict[str, float] = field(default_factory=dict)
    phase_weights: dict[str, float] = field(default_factory=dict)

    SUMS: ClassVar = ("samples", "weight", "value_sum", "excess_sum")
    MERGES: ClassVar = {"phase_sums": "vitals_json_add", "phase_weights": "vitals_json_add"}

    def columns(self) -> dict[str, Any]:
        return {
            **{c: getattr(self, c) for c in self.SUMS},
            "phase_sums": _dust_free(self.phase_sums),
            "phase_weights": _dust_free(self.phase_weights),
        }

    @classmethod
    def from_values(cls, values: Sequence[Any]) -> "AttributionAggregate":
        """From a row's SUMS then MERGES columns, in that order."""
        *sums, phase_sums, phase_weights = values
        return cls(
            **dict(zip(cls.SUMS, sums, strict=True)), phase_sums=dict(phase_sums), phase_weights=dict(phase_weights)
        )

    def add(self, value: float, excess: float, phases: Mapping[str, float], weight: float, sign: int) -> None:
        signed = weight * sign
        self.samples += sign
        self.weight += signed
        self.value_sum += value * signed
        self.excess_sum += excess * signed
        for phase, duration in phases.items():
            self.phase_sums[phase] = self.phase_sums.get(phase, 0.0) + duration * signed
            self.phase_weights[phase] = self.phase_weights.get(phase, 0.0) + signed

    def merge(self, other: "AttributionAggregate") -> None:
        self.samples += other.samples
        self.weight += other.weight
        self.value_sum += other.value_sum
        self.excess_sum += other.excess_sum
        for phase, total in other.phase_sums.items():
            self.phase_sums[phase] = self.phase_sums.get(phase, 0.0) + total
        for phase, total in other.phase_weights.items():
            self.phase_weights[phase] = self.phase_weights.get(phase, 0.0) + total


def _dust_free(totals: Mapping[str, float]) -> dict[str, float]:
    # Sums that cancel out after a re-report are floating-point dust.
    return {k: v for k, v in totals.items() if abs(v) > 1e-9}


class RollupDelta:
    """The change a batch makes to the Rollup rows and, derived from it, to
    the DimensionRollup rows. ``dimensions=False`` leaves the latter alone:
    compaction only regroups Rollup rows that were counted in them already."""

    def __init__(self, *, now: datetime | None = None, dimensions: bool = True) -> None:
        self.now = now or timezone.now()
        self.dimensions = dimensions
        self.aggregates: dict[RollupKey, Aggregate] = {}
        # Hour blocks only; the larger ones are folded from these in apply().
        self.hourly: dict[DimensionKey, Aggregate] = {}
        self.attributions: dict[AttributionKey, AttributionAggregate] = {}

    def add(self, row: Mapping[str, Any], sign: int = 1) -> None:
        """Count ``row`` (a dict with Metric's columns) in, or out with sign=-1."""
        seconds, start = bucket_for(row["occurred_at"], now=self.now)
        key = (row["site_id"], seconds, start, *(row[d] for d in Rollup.DIMENSIONS))
        aggregate = self.aggregates.get(key)
        if aggregate is None:
            aggregate = self.aggregates[key] = Aggregate()
        aggregate.add(row["value"], row["rating"], row["weight"], sign)
        if not self.dimensions:
            return
        site_id, name = row["site_id"], row["name"]
        # Buckets start on a minute or an hour.
        hour = start.replace(minute=0)
        # Counted straight into each dimension's hour block: adding a value
        # costs less than merging the Rollup deltas' sketches afterwards.
        for dimension in DIMENSION_GRAINS:
            dimension_key = (site_id, dimension, HOUR, hour, name, "" if dimension == "site" else row[dimension])
            block = self.hourly.get(dimension_key)
            if block is None:
                block = self.hourly[dimension_key] = Aggregate()
            block.add(row["value"], row["rating"], row["weight"], sign)
        if row.get("attribution"):
            excess = max(0.0, row["value"] - THRESHOLDS[name][0])
            for kind, culprit, phases in attribution_parts(name, row["attribution"]):
                attribution_key = (site_id, HOUR, hour, name, row["route"], kind, culprit)
                found = self.attributions.get(attribution_key)
                if found is None:
                    found = self.attributions[attribution_key] = AttributionAggregate()
                found.add(row["value"], excess, phases, row["weight"], sign)

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
        """The DimensionRollup deltas: the hour blocks ``add`` counted, and
        the larger blocks folded from them (a batch spans few hours, so this
        is a few folds per hour block, not per metric)."""
        out = dict(self.hourly)
        for (site_id, dimension, _, hour, name, value), aggregate in self.hourly.items():
            for seconds in LEVELS[1:]:
                _fold(out, (site_id, dimension, seconds, block_start(hour, seconds), name, value), aggregate)
        return out

    def attribution_aggregates(self) -> dict[AttributionKey, AttributionAggregate]:
        out = dict(self.attributions)
        for (site_id, _, hour, *rest), aggregate in self.attributions.items():
            for seconds in LEVELS[1:]:
                _fold(out, (site_id, seconds, block_start(hour, seconds), *rest), aggregate, AttributionAggregate)
        return out

    def apply(self) -> int:
        """Merge into the Rollup, DimensionRollup and AttributionRollup
        tables; returns the rows written. Call inside the transaction that
        wrote the raw rows, holding the site locks."""
        if not self.aggregates:
            return 0
        tables: list[tuple[type[Model], tuple[str, ...], Mapping[tuple[Any, ...], Any]]] = [
            (Rollup, _ROLLUP_KEY, self.aggregates)
        ]
        if self.dimensions:
            tables.append((DimensionRollup, _DIMENSION_KEY, self.dimension_aggregates()))
            if self.attributions:
                tables.append((AttributionRollup, _ATTRIBUTION_KEY, self.attribution_aggregates()))
        written = 0
        for model, key_fields, aggregates in tables:
            if connection.vendor != "postgresql":
                written += _apply_portable(model, key_fields, aggregates)
            elif model is Rollup:
                # Rollup deltas are mostly new rows: the database adds the
                # few that meet a stored one.
                written += _apply_postgresql(model, key_fields, aggregates)
            else:
                # Block rows are mostly stored already, with sketches of a
                # hundred buckets or more: merging them in Python costs a
                # fraction of what vitals_sketch_merge does in SQL.
                written += _apply_postgresql(model, key_fields, _merged_with_stored(model, key_fields, aggregates))
        return written


_ROLLUP_KEY = ("site_id", "bucket_seconds", "bucket_start", *Rollup.DIMENSIONS)
_DIMENSION_KEY = ("site_id", "dimension", "bucket_seconds", "bucket_start", "name", "value")
_ATTRIBUTION_KEY = ("site_id", "bucket_seconds", "bucket_start", "name", "route", "kind", "key")


def _fold(into: dict[Any, Any], key: Any, aggregate: Any, kind: type = Aggregate) -> None:
    target = into.get(key)
    if target is None:
        target = into[key] = kind()
    target.merge(aggregate)


def _apply_postgresql(
    model: type[Model], key_fields: tuple[str, ...], aggregates: Mapping[tuple[Any, ...], Any]
) -> int:
    """COPY ``aggregates`` into a staging table and write them in one
    INSERT ... ON CONFLICT. Deltas are added to the stored rows, the database
    adding the counts and merging the JSON columns (vitals_sketch_merge,
    migration 0004; vitals_json_add, 0007); ``Stored`` totals, already merged
    by ``_merged_with_stored``, replace them."""
    if not aggregates:
        return 0
    kind = type(next(iter(aggregates.values())))
    replace = kind is Stored
    if replace:
        kind = type(next(iter(aggregates.values())).aggregate)
    table = model._meta.db_table
    stage = f"{table}_stage"
    columns = [*key_fields, *kind.SUMS, *kind.MERGES]
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
            f"SELECT {', '.join(columns)} FROM {table} WITH NO DATA"
        )
        # Emptied at commit, but one transaction may apply several deltas
        # (a rebuild does, and so does a caller's enclosing transaction).
        cursor.execute(f"DELETE FROM {stage}")
        emptied = []
        with (
            connection.wrap_database_errors,
            cursor.cursor.copy(f"COPY {stage} ({', '.join(columns)}) FROM STDIN") as copy,
        ):
            for row_key, item in aggregates.items():
                aggregate = item.aggregate if replace else item
                if replace and aggregate.samples <= 0:
                    if item.pk is not None:
                        emptied.append(item.pk)
                    continue
                values = aggregate.columns()
                copy.write_row(
                    [*row_key, *(values[c] for c in kind.SUMS), *(json.dumps(values[c]) for c in kind.MERGES)]
                )
        if replace:
            updates = [f"{c} = EXCLUDED.{c}" for c in (*kind.SUMS, *kind.MERGES)]
        else:
            updates = [f"{c} = {table}.{c} + EXCLUDED.{c}" for c in kind.SUMS]
            updates += [f"{c} = {function}({table}.{c}, EXCLUDED.{c})" for c, function in kind.MERGES.items()]
        cursor.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) "
            f"SELECT {', '.join(columns)} FROM {stage} "
            f"ON CONFLICT ({', '.join(key_fields)}) DO UPDATE SET {', '.join(updates)}"
        )
        written = cursor.rowcount
        if emptied:
            cursor.execute(f"DELETE FROM {table} WHERE id = ANY(%s)", [emptied])
            written += cursor.rowcount
        elif not replace and any(aggregate.samples < 0 for aggregate in aggregates.values()):
            # Re-reported metrics were taken out: a bucket left empty goes.
            cursor.execute(
                f"DELETE FROM {table} r USING {stage} s WHERE r.samples <= 0 AND "
                + " AND ".join(f"r.{c} = s.{c}" for c in key_fields)
            )
    return written


def _apply_portable(model: type[Model], key_fields: tuple[str, ...], aggregates: Mapping[tuple[Any, ...], Any]) -> int:
    if not aggregates:
        return 0
    kind = type(next(iter(aggregates.values())))
    upserts: list[Model] = []
    emptied: list[int] = []
    for key, stored in _merged_with_stored(model, key_fields, aggregates).items():
        if stored.aggregate.samples <= 0:
            if stored.pk is not None:
                emptied.append(stored.pk)
            continue
        upserts.append(model(**dict(zip(key_fields, key, strict=True)), **stored.aggregate.columns()))
    if upserts:
        model._default_manager.bulk_create(
            upserts,
            batch_size=500,
            update_conflicts=True,
            unique_fields=[f.removesuffix("_id") for f in key_fields],
            update_fields=[*kind.SUMS, *kind.MERGES],
        )
    if emptied:
        model._default_manager.filter(pk__in=emptied).delete()
    return len(upserts) + len(emptied)


@dataclass
class Stored:
    """A row's new totals, the stored ones merged with the delta; ``pk`` of
    the stored row, None when there was none."""

    pk: int | None
    aggregate: Any


def _merged_with_stored(
    model: type[Model], key_fields: tuple[str, ...], aggregates: Mapping[tuple[Any, ...], Any]
) -> dict[tuple[Any, ...], Stored]:
    """Each delta merged with its stored row. The rows are read by the key's
    leading columns up to the bucket start (the unique index's prefix), then
    matched on the rest here: a batch touches few buckets, and one OR of many
    full keys would make a query too large to plan quickly."""
    kind = type(next(iter(aggregates.values())))
    split = key_fields.index("bucket_start")
    starts: dict[tuple[Any, ...], set[datetime]] = {}
    for key in aggregates:
        starts.setdefault(key[:split], set()).add(key[split])
    condition = Q()
    for prefix, bucket_starts in starts.items():
        condition |= Q(**dict(zip(key_fields[:split], prefix, strict=True)), bucket_start__in=bucket_starts)
    merged = {key: Stored(pk=None, aggregate=delta) for key, delta in aggregates.items()}
    width = len(key_fields)
    rows = model._default_manager.filter(condition).values_list("pk", *key_fields, *kind.SUMS, *kind.MERGES)
    for pk, *values in rows.iterator(chunk_size=2000):
        found = merged.get(tuple(values[:width]))
        if found is not None:
            stored = kind.from_values(values[width:])
            stored.merge(found.aggregate)
            found.pk, found.aggregate = pk, stored
    return merged
