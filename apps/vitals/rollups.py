"""Turning metric rows into rollup rows.

A ``RollupDelta`` collects the change that a batch of raw rows makes to the
rollups (rows added, or taken out again when a metric is re-reported with a
new value) and applies it to the ``Rollup``, ``DimensionRollup`` and
``AttributionRollup`` tables in one pass. Since the rollups are sums,
applying the deltas of every batch gives the same rows as building them from
all raw rows at once (see ``rollups_rebuild``).

The batch is summed column-wise (``_Totals``): each row is given small
integer codes for its site, bucket and dimension values, rows with the same
codes are grouped by numpy, and counts, weights and sketch buckets are added
per group with ``bincount``. A worker's batch of 10,000 metrics or more then
costs a few Python operations per metric instead of nine rollup updates,
each with its own histogram.
"""

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any, ClassVar

import numpy as np
import orjson
from django.db import connection
from django.db.models import Model, Q
from django.utils import timezone

from apps.vitals.attribution import attribution_parts
from apps.vitals.beacon import THRESHOLDS
from apps.vitals.bulk import copy_rows, stage_create
from apps.vitals.models import DIMENSION_GRAINS, AttributionRollup, DimensionRollup, Rating, Rollup
from apps.vitals.sketch import (
    ZERO_BUCKET,
    Sketch,
    add_dense,
    bucket_indexes,
    dense_columns,
    dense_weights,
)

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
    # with the named SQL function; STORED, all the row's columns but its key.
    SUMS: ClassVar = ("samples", "weight", "good", "needs_improvement", "poor", "value_sum")
    MERGES: ClassVar = {"sketch": "vitals_sketch_merge"}
    STORED: ClassVar = (*SUMS, *MERGES)

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


class DenseAggregate:
    """A DimensionRollup row's totals, or the change to them, with its sketch
    as the row stores it (sketch.dense_columns): a dense array of bucket
    weights, so that merging a delta into a stored block is one numpy
    addition whatever the number of buckets."""

    __slots__ = ("offset", "sums", "weights", "zero")

    SUMS: ClassVar = Aggregate.SUMS
    # Blocks are merged here and written back whole, never by the database.
    MERGES: ClassVar[dict[str, str]] = {}
    SKETCH: ClassVar = ("sketch_zero", "sketch_offset", "sketch_weights")
    STORED: ClassVar = (*SUMS, *SKETCH)

    def __init__(
        self, sums: Sequence[float] | None = None, zero: float = 0.0, offset: int = 0, weights: Any = None
    ) -> None:
        self.sums = list(sums) if sums is not None else [0] * len(self.SUMS)
        self.zero = zero
        self.offset = offset
        self.weights: np.ndarray = weights if weights is not None else np.zeros(0)

    @property
    def samples(self) -> int:
        return int(self.sums[0])

    @classmethod
    def from_values(cls, values: Sequence[Any]) -> "DenseAggregate":
        """From a row's STORED columns, in that order."""
        *sums, zero, offset, weights = values
        return cls(sums, zero, offset, dense_weights(weights))

    def merge(self, other: "DenseAggregate") -> None:
        self.sums = [a + b for a, b in zip(self.sums, other.sums, strict=True)]
        self.zero += other.zero
        self.offset, self.weights = add_dense(self.offset, self.weights, other.offset, other.weights)

    def sketch_columns(self) -> tuple[float, int, bytes]:
        return dense_columns(self.zero, self.offset, self.weights)

    def columns(self) -> dict[str, Any]:
        return dict(zip(self.STORED, (*self.sums, *self.sketch_columns()), strict=True))

    def sketch(self) -> Sketch:
        return Sketch.from_dense(*self.sketch_columns())


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
    STORED: ClassVar = (*SUMS, *MERGES)

    def columns(self) -> dict[str, Any]:
        return {
            **{c: getattr(self, c) for c in self.SUMS},
            "phase_sums": _dust_free(self.phase_sums),
            "phase_weights": _dust_free(self.phase_weights),
        }

    @classmethod
    def from_values(cls, values: Sequence[Any]) -> "AttributionAggregate":
        """From a row's SUMS then MERGES columns, in that order (JSON columns
        decoded or as text)."""
        *sums, phase_sums, phase_weights = values
        if isinstance(phase_sums, str):
            phase_sums, phase_weights = json.loads(phase_sums), json.loads(phase_weights)
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


# Weights within this of zero are dust left by a subtraction (as in Sketch).
_EPSILON = 1e-9


def _codes(values: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
    """A small integer per value (equal values, equal codes) and the distinct
    values in code order."""
    distinct = list(dict.fromkeys(values))
    lookup = {value: code for code, value in enumerate(distinct)}
    return np.fromiter(map(lookup.__getitem__, values), dtype=np.int64, count=len(values)), distinct


def _group(columns: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Group numbers (0 to G-1) of rows whose codes are equal in every
    column, and the first row of each group."""
    combined = columns[0]
    for column in columns[1:]:
        width = int(column.max()) + 1
        if (int(combined.max()) + 1) * width >= 2**62:
            # Renumbered densely before the product could overflow.
            combined = np.unique(combined, return_inverse=True)[1].reshape(-1)
        combined = combined * width + column
    _, first, groups = np.unique(combined, return_index=True, return_inverse=True)
    return groups.reshape(-1), first


@dataclass
class _Totals:
    """Aggregate's totals for many groups at once, as arrays; the sketches'
    buckets as (group, bucket index, weight) triples sorted by group and
    index, dust dropped. Built for single rows (``of_rows``), then summed
    into groups (``grouped``), and groups into larger ones."""

    samples: np.ndarray
    sums: list[np.ndarray]  # Aggregate.SUMS after samples
    zero: np.ndarray
    bucket_group: np.ndarray
    bucket_index: np.ndarray
    bucket_weight: np.ndarray

    @classmethod
    def of_rows(
        cls, values: np.ndarray, ratings: np.ndarray, signs: np.ndarray, signed: np.ndarray, indexes: np.ndarray
    ) -> "_Totals":
        in_buckets = indexes != ZERO_BUCKET
        return cls(
            samples=signs,
            sums=[
                signed,
                np.where(ratings == Rating.GOOD, signed, 0.0),
                np.where(ratings == Rating.NEEDS_IMPROVEMENT, signed, 0.0),
                np.where((ratings != Rating.GOOD) & (ratings != Rating.NEEDS_IMPROVEMENT), signed, 0.0),
                values * signed,
            ],
            zero=np.where(in_buckets, 0.0, signed),
            bucket_group=np.flatnonzero(in_buckets),
            bucket_index=indexes[in_buckets],
            bucket_weight=signed[in_buckets],
        )

    def __len__(self) -> int:
        return len(self.samples)

    def grouped(self, groups: np.ndarray, count: int) -> "_Totals":
        """Totals of ``count`` groups, ``groups`` giving each current one's."""
        zero = np.bincount(groups, weights=self.zero, minlength=count)
        zero[np.abs(zero) < _EPSILON] = 0.0
        bucket_group, bucket_index, bucket_weight = self.bucket_group, self.bucket_index, self.bucket_weight
        if len(bucket_index):
            lowest = int(bucket_index.min())
            span = int(bucket_index.max()) - lowest + 1
            pairs, which = np.unique(groups[bucket_group] * span + (bucket_index - lowest), return_inverse=True)
            weights = np.bincount(which.reshape(-1), weights=bucket_weight)
            kept = np.abs(weights) >= _EPSILON
            pairs, bucket_weight = pairs[kept], weights[kept]
            bucket_group, bucket_index = pairs // span, pairs % span + lowest
        return _Totals(
            samples=np.bincount(groups, weights=self.samples, minlength=count).round().astype(np.int64),
            sums=[np.bincount(groups, weights=column, minlength=count) for column in self.sums],
            zero=zero,
            bucket_group=bucket_group,
            bucket_index=bucket_index,
            bucket_weight=bucket_weight,
        )

    def __add__(self, other: "_Totals") -> "_Totals":
        """Both sets of groups, ``other``'s numbered after this one's."""
        return _Totals(
            samples=np.concatenate([self.samples, other.samples]),
            sums=[np.concatenate([a, b]) for a, b in zip(self.sums, other.sums, strict=True)],
            zero=np.concatenate([self.zero, other.zero]),
            bucket_group=np.concatenate([self.bucket_group, other.bucket_group + len(self)]),
            bucket_index=np.concatenate([self.bucket_index, other.bucket_index]),
            bucket_weight=np.concatenate([self.bucket_weight, other.bucket_weight]),
        )

    def bucket_ranges(self) -> list[tuple[int, int]]:
        """(first, end) of each group's slice of the bucket triples."""
        ends = np.cumsum(np.bincount(self.bucket_group, minlength=len(self))).tolist()
        return list(zip([0, *ends[:-1]], ends, strict=True))

    def sums_lists(self) -> list[list[Any]]:
        """Per group, the SUMS columns as Python numbers."""
        return [list(row) for row in zip(self.samples.tolist(), *(c.tolist() for c in self.sums), strict=True)]

    def sparse_texts(self) -> list[str]:
        """Per group, its sketch in Sketch.to_json's form, as JSON text."""
        indexes, weights = self.bucket_index.tolist(), self.bucket_weight.tolist()
        out = []
        for zero, (first, end) in zip(self.zero.tolist(), self.bucket_ranges(), strict=True):
            buckets = ",".join(f'"{indexes[i]}":{_json_number(weights[i])}' for i in range(first, end))
            out.append(f'{{"z":{_json_number(zero)},"b":{{{buckets}}}}}')
        return out

    def sketches(self) -> list[Sketch]:
        indexes, weights = self.bucket_index.tolist(), self.bucket_weight.tolist()
        return [
            Sketch(dict(zip(indexes[first:end], weights[first:end], strict=True)), zero)
            for zero, (first, end) in zip(self.zero.tolist(), self.bucket_ranges(), strict=True)
        ]

    def dense_aggregates(self) -> list[DenseAggregate]:
        out = []
        for sums, zero, (first, end) in zip(self.sums_lists(), self.zero.tolist(), self.bucket_ranges(), strict=True):
            if first == end:
                out.append(DenseAggregate(sums, zero))
                continue
            indexes = self.bucket_index[first:end]
            lowest = int(indexes[0])
            weights = np.zeros(int(indexes[-1]) - lowest + 1)
            weights[indexes - lowest] = self.bucket_weight[first:end]
            out.append(DenseAggregate(sums, zero, lowest, weights))
        return out


def _json_number(weight: float) -> str:
    # As Sketch.to_json writes weights: whole ones as integers.
    return str(int(weight)) if weight.is_integer() else repr(round(weight, 9))


@dataclass
class _Batch:
    """A RollupDelta's rows as columns of codes and numbers."""

    rows: list[Mapping[str, Any]]
    signs: list[int]
    totals: _Totals
    site: np.ndarray
    bucket: np.ndarray  # minute or hour bucket (Rollup rows)
    buckets: list[tuple[int, datetime]]
    hour: np.ndarray
    hours: list[datetime]
    dimensions: dict[str, tuple[np.ndarray, list[Any]]]

    @classmethod
    def of(cls, rows: list[Mapping[str, Any]], signs: list[int], now: datetime) -> "_Batch":
        count = len(rows)
        # map with itemgetter: a column out of every row without a Python
        # frame per row, as a generator would make (a batch has 50,000).
        values = np.fromiter(map(itemgetter("value"), rows), dtype=np.float64, count=count)
        weights = np.fromiter(map(itemgetter("weight"), rows), dtype=np.float64, count=count)
        ratings = np.fromiter(map(itemgetter("rating"), rows), dtype=np.int64, count=count)
        sign_array = np.asarray(signs, dtype=np.int64)
        totals = _Totals.of_rows(values, ratings, sign_array, weights * sign_array, bucket_indexes(values.tolist()))
        # bucket_for, for all rows: minute buckets from the horizon on, hour
        # buckets before; both on whole seconds since the epoch.
        moments = np.fromiter(
            map(datetime.timestamp, map(itemgetter("occurred_at"), rows)), dtype=np.float64, count=count
        )
        hour_starts = np.floor(moments / HOUR) * HOUR
        recent = moments >= (now - MINUTE_HORIZON).timestamp()
        bucket_starts = np.where(recent, np.floor(moments / 60) * 60, hour_starts)
        bucket, bucket_keys = _codes(
            list(zip(np.where(recent, Rollup.MINUTE, Rollup.HOUR).tolist(), bucket_starts.tolist(), strict=True))
        )
        hour, hour_keys = _codes(hour_starts.tolist())
        return cls(
            rows=rows,
            signs=signs,
            totals=totals,
            site=_codes(list(map(itemgetter("site_id"), rows)))[0],
            bucket=bucket,
            buckets=[(int(seconds), _utc(start)) for seconds, start in bucket_keys],
            hour=hour,
            hours=[_utc(start) for start in hour_keys],
            dimensions={d: _codes(list(map(itemgetter(d), rows))) for d in Rollup.DIMENSIONS},
        )

    def rollups(self) -> tuple[list[RollupKey], _Totals]:
        """The Rollup rows' keys and totals."""
        groups, first = _group([self.site, self.bucket, *(self.dimensions[d][0] for d in Rollup.DIMENSIONS)])
        dimensions = itemgetter(*Rollup.DIMENSIONS)
        keys = []
        buckets = self.bucket.tolist()
        for row in first.tolist():
            record = self.rows[row]
            keys.append((record["site_id"], *self.buckets[buckets[row]], *dimensions(record)))
        return keys, self.totals.grouped(groups, len(first))

    def dimension_blocks(self) -> dict[DimensionKey, DenseAggregate]:
        """The DimensionRollup rows' deltas at every level: each dimension's
        hour blocks summed from the rows, the larger blocks from those."""
        out: dict[DimensionKey, DenseAggregate] = {}
        name_codes = self.dimensions["name"][0]
        for dimension in DIMENSION_GRAINS:
            columns = [self.site, self.hour, name_codes]
            if dimension != "site":
                columns.append(self.dimensions[dimension][0])
            groups, first = _group(columns)
            hourly = self.totals.grouped(groups, len(first))
            first_rows = first.tolist()
            level_hours = self.hour[first]
            for seconds in LEVELS:
                if seconds == HOUR:
                    totals, group_rows = hourly, first_rows
                else:
                    # Hour blocks are folded into the larger blocks they lie in.
                    starts = [block_start(hour, seconds) for hour in self.hours]
                    start_codes = np.asarray(_codes(starts)[0])[level_hours]
                    parents, parent_first = _group([*(c[first] for c in columns if c is not self.hour), start_codes])
                    totals = hourly.grouped(parents, len(parent_first))
                    group_rows = [first_rows[i] for i in parent_first.tolist()]
                for row, aggregate in zip(group_rows, totals.dense_aggregates(), strict=True):
                    record = self.rows[row]
                    value = "" if dimension == "site" else record[dimension]
                    start = block_start(self.hours[int(self.hour[row])], seconds)
                    out[(record["site_id"], dimension, seconds, start, record["name"], value)] = aggregate
        return out

    def attribution_blocks(self) -> dict[AttributionKey, AttributionAggregate]:
        """The AttributionRollup rows' deltas: hour blocks counted row by row
        (a metric names one or two culprits, each with its phases), then
        folded into the larger blocks."""
        hourly: dict[AttributionKey, AttributionAggregate] = {}
        hours = [self.hours[code] for code in self.hour.tolist()]
        for row, sign, hour in zip(self.rows, self.signs, hours, strict=True):
            attribution = row.get("attribution")
            if not attribution:
                continue
            name, value = row["name"], row["value"]
            excess = max(0.0, value - THRESHOLDS[name][0])
            for kind, culprit, phases in attribution_parts(name, attribution):
                key = (row["site_id"], HOUR, hour, name, row["route"], kind, culprit)
                found = hourly.get(key)
                if found is None:
                    found = hourly[key] = AttributionAggregate()
                found.add(value, excess, phases, row["weight"], sign)
        out = dict(hourly)
        for (site_id, _, hour, *rest), aggregate in hourly.items():
            for seconds in LEVELS[1:]:
                _fold(out, (site_id, seconds, block_start(hour, seconds), *rest), aggregate, AttributionAggregate)
        return out


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class RollupDelta:
    """The change a batch makes to the Rollup rows and, derived from it, to
    the DimensionRollup and AttributionRollup rows. ``dimensions=False``
    leaves the latter alone: compaction only regroups Rollup rows that were
    counted in them already.

    ``add`` only collects rows; ``apply`` sums them all at once (_Batch)."""

    def __init__(self, *, now: datetime | None = None, dimensions: bool = True) -> None:
        self.now = now or timezone.now()
        self.dimensions = dimensions
        self.rows: list[Mapping[str, Any]] = []
        self.signs: list[int] = []
        # Stored rollup rows regrouped by merge_rollup (compaction).
        self.folded: dict[RollupKey, Aggregate] = {}
        # What apply() writes, summed once: by prepare() or when first needed.
        self._summed: dict[str, Any] = {}

    def add(self, row: Mapping[str, Any], sign: int = 1) -> None:
        """Count ``row`` (a dict with Metric's columns) in, or out with sign=-1."""
        self.rows.append(row)
        self.signs.append(sign)
        self._summed.clear()

    def add_all(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Count ``rows`` in."""
        before = len(self.rows)
        self.rows.extend(rows)
        self.signs.extend([1] * (len(self.rows) - before))
        self._summed.clear()

    def merge_rollup(self, rollup: Rollup) -> None:
        """Fold an existing rollup row into the bucket its start falls in
        now (compaction of minute rows into hour rows)."""
        seconds, start = bucket_for(rollup.bucket_start, now=self.now)
        key = (rollup.site_id, seconds, start, *(getattr(rollup, d) for d in Rollup.DIMENSIONS))
        _fold(
            self.folded,
            key,
            Aggregate(
                samples=rollup.samples,
                weight=rollup.weight,
                good=rollup.good,
                needs_improvement=rollup.needs_improvement,
                poor=rollup.poor,
                value_sum=rollup.value_sum,
                sketch=Sketch.from_json(rollup.sketch),
            ),
        )

    def __len__(self) -> int:
        return len(self.rows) + len(self.folded)

    def batch(self) -> _Batch:
        if "batch" not in self._summed:
            self._summed["batch"] = _Batch.of(self.rows, self.signs, self.now)
        return self._summed["batch"]

    def prepare(self) -> None:
        """Sum the added rows now rather than in apply(): the Python half of
        the work, which a caller may do while the database is busy."""
        if not self.rows:
            return
        self._rollup_totals()
        self.dimension_aggregates()
        self.attribution_aggregates()
        if connection.vendor == "postgresql":
            self._rollup_copy_rows()
            self._lookup("dimensions")
            self._lookup("attributions")

    def _rollup_totals(self) -> tuple[list[RollupKey], _Totals]:
        if "rollups" not in self._summed:
            self._summed["rollups"] = self.batch().rollups()
        return self._summed["rollups"]

    def _rollup_copy_rows(self) -> list[list[Any]]:
        """The Rollup deltas as _add_postgresql takes them: key, SUMS, and
        the sketch as JSON text."""
        if "rollup_rows" not in self._summed:
            keys, totals = self._rollup_totals()
            self._summed["rollup_rows"] = [
                [*key, *sums, sketch]
                for key, sums, sketch in zip(keys, totals.sums_lists(), totals.sparse_texts(), strict=True)
            ]
        return self._summed["rollup_rows"]

    def rollup_aggregates(self) -> dict[RollupKey, Aggregate]:
        """The Rollup deltas, one Aggregate per row."""
        out: dict[RollupKey, Aggregate] = {}
        if self.rows:
            keys, totals = self._rollup_totals()
            for key, sums, sketch in zip(keys, totals.sums_lists(), totals.sketches(), strict=True):
                out[key] = Aggregate(**dict(zip(Aggregate.SUMS, sums, strict=True)), sketch=sketch)
        for key, aggregate in self.folded.items():
            _fold(out, key, aggregate)
        return out

    def _lookup(self, blocks: str) -> str:
        """The keys of the ``blocks`` ("dimensions" or "attributions")
        deltas, as _merged_with_stored_postgresql looks their stored rows
        up."""
        name = f"{blocks} lookup"
        if name not in self._summed:
            aggregates = self.dimension_aggregates() if blocks == "dimensions" else self.attribution_aggregates()
            self._summed[name] = _keys_json(list(aggregates))
        return self._summed[name]

    def dimension_aggregates(self) -> dict[DimensionKey, DenseAggregate]:
        """The DimensionRollup deltas at every level."""
        if not self.rows or not self.dimensions:
            return {}
        if "dimensions" not in self._summed:
            self._summed["dimensions"] = self.batch().dimension_blocks()
        return self._summed["dimensions"]

    def attribution_aggregates(self) -> dict[AttributionKey, AttributionAggregate]:
        if not self.rows or not self.dimensions:
            return {}
        if "attributions" not in self._summed:
            self._summed["attributions"] = self.batch().attribution_blocks()
        return self._summed["attributions"]

    def apply(self, correction: "RollupDelta | None" = None) -> int:
        """Merge into the Rollup, DimensionRollup and AttributionRollup
        tables; returns the rows written. Call inside the transaction that
        wrote the raw rows, holding the site locks.

        ``correction``, a delta of rows to count as well, summed on its own
        (this one may be summed already, see ``prepare``). Its Rollup totals
        are added to this delta's before writing: a correction that takes
        out what this delta counted would, written alone, offer the database
        rows with negative counts, which the rows' CHECK refuses even when
        the INSERT ends in an UPDATE."""
        if correction is not None and correction.rows:
            if connection.vendor != "postgresql":
                for row, sign in zip(correction.rows, correction.signs, strict=True):
                    self.add(row, sign)
            else:
                keys, totals = self._rollup_totals()
                more_keys, more_totals = correction._rollup_totals()
                groups, distinct = _codes(keys + more_keys)
                self._summed["rollups"] = (distinct, (totals + more_totals).grouped(groups, len(distinct)))
                self._summed.pop("rollup_rows", None)
                written = self.apply()
                return (
                    written
                    + _replace_postgresql(
                        DimensionRollup, _DIMENSION_KEY, DenseAggregate, correction.dimension_aggregates()
                    )
                    + _replace_postgresql(
                        AttributionRollup, _ATTRIBUTION_KEY, AttributionAggregate, correction.attribution_aggregates()
                    )
                )
        if not self.rows and not self.folded:
            return 0
        if connection.vendor != "postgresql":
            return (
                _apply_portable(Rollup, _ROLLUP_KEY, self.rollup_aggregates())
                + _apply_portable(DimensionRollup, _DIMENSION_KEY, self.dimension_aggregates())
                + _apply_portable(AttributionRollup, _ATTRIBUTION_KEY, self.attribution_aggregates())
            )
        written = 0
        if self.rows:
            # Rollup deltas are mostly new rows: the database adds the few
            # that meet a stored one, straight from the batch's totals.
            _, totals = self._rollup_totals()
            written += _add_postgresql(
                Rollup,
                _ROLLUP_KEY,
                Aggregate,
                self._rollup_copy_rows(),
                negative=bool((totals.samples <= 0).any()),
            )
        if self.folded:
            written += _add_postgresql(
                Rollup,
                _ROLLUP_KEY,
                Aggregate,
                ([*key, *(aggregate.columns()[c] for c in Aggregate.STORED)] for key, aggregate in self.folded.items()),
                negative=any(aggregate.samples <= 0 for aggregate in self.folded.values()),
            )
        # Block rows are mostly stored already, with sketches of a hundred
        # buckets or more: merging them in Python costs a fraction of what
        # vitals_sketch_merge does in SQL.
        if self.rows and self.dimensions:
            written += _replace_postgresql(
                DimensionRollup,
                _DIMENSION_KEY,
                DenseAggregate,
                self.dimension_aggregates(),
                lookup=self._lookup("dimensions"),
            )
            written += _replace_postgresql(
                AttributionRollup,
                _ATTRIBUTION_KEY,
                AttributionAggregate,
                self.attribution_aggregates(),
                lookup=self._lookup("attributions"),
            )
        return written


_ROLLUP_KEY = ("site_id", "bucket_seconds", "bucket_start", *Rollup.DIMENSIONS)
_DIMENSION_KEY = ("site_id", "dimension", "bucket_seconds", "bucket_start", "name", "value")
_ATTRIBUTION_KEY = ("site_id", "bucket_seconds", "bucket_start", "name", "route", "kind", "key")


def _fold(into: dict[Any, Any], key: Any, aggregate: Any, kind: type = Aggregate) -> None:
    target = into.get(key)
    if target is None:
        target = into[key] = kind()
    target.merge(aggregate)


def _add_postgresql(model: type[Model], key_fields: tuple[str, ...], kind: Any, rows: Any, *, negative: bool) -> int:
    """Add delta ``rows`` (key, SUMS, then MERGES as JSON text or the
    objects to encode; see bulk.copy_rows) to the stored
    rows. ``negative``: some deltas take metrics out (or net to nothing), so
    rows left empty are deleted.

    Rows in time buckets that hold no row yet are COPYed straight into the
    table: they cannot meet a stored row, since every writer holds the
    site's lock (services._lock_sites). That is nearly every row of a
    batch, as minute buckets by every dimension hold a metric or two each;
    INSERT ... ON CONFLICT would cost them twice what COPY does (each row's
    key looked up in the unique index before it is inserted into it). The
    others are COPYed into a staging table and added to the stored rows in
    one INSERT ... ON CONFLICT, the database adding the counts and merging
    the JSON columns (vitals_sketch_merge, migration 0004)."""
    table = model._meta.db_table
    columns = [*key_fields, *kind.STORED]
    rows = list(rows)
    if not rows:
        return 0
    samples = len(key_fields)
    with connection.cursor() as cursor:
        stored = _stored_buckets(cursor, table, key_fields, rows)
        fresh: list[Any] = []
        merging: list[Any] = []
        for row in rows:
            # Only additions go straight in: a delta that takes metrics out
            # is always of a stored row.
            (fresh if row[samples] > 0 and tuple(row[:_BUCKET]) not in stored else merging).append(row)
        written = copy_rows(cursor, table, columns, fresh)
        if not merging:
            return written
        stage = f"{table}_stage"
        stage_create(cursor, stage, table, columns)
        copy_rows(cursor, stage, columns, merging)
        updates = [f"{c} = {table}.{c} + EXCLUDED.{c}" for c in kind.SUMS]
        updates += [f"{c} = {function}({table}.{c}, EXCLUDED.{c})" for c, function in kind.MERGES.items()]
        cursor.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(columns)} FROM {stage} "
            f"ON CONFLICT ({', '.join(key_fields)}) DO UPDATE SET {', '.join(updates)}"
        )
        written += cursor.rowcount
        if negative:
            # Re-reported metrics were taken out: a bucket left empty goes.
            cursor.execute(
                f"DELETE FROM {table} r USING {stage} s WHERE r.samples <= 0 AND "
                + " AND ".join(f"r.{c} = s.{c}" for c in key_fields)
            )
    return written


# The leading key columns of a time bucket: site, bucket size, start.
_BUCKET = 3


def _stored_buckets(cursor: Any, table: str, key_fields: tuple[str, ...], rows: list[Any]) -> set[tuple[Any, ...]]:
    """The time buckets of ``rows`` (their first _BUCKET key columns) that
    hold a row of ``table`` already. A batch touches a few hundred buckets;
    each is one probe of the unique index, whose leading columns these are."""
    if key_fields[:_BUCKET] != ("site_id", "bucket_seconds", "bucket_start"):
        raise ValueError(f"{table}'s key does not start with its time bucket")
    buckets = list({tuple(row[:_BUCKET]) for row in rows})
    cursor.execute(
        "SELECT k.site_id, k.bucket_seconds, k.bucket_start "
        "FROM unnest(%s::bigint[], %s::integer[], %s::timestamptz[]) AS k(site_id, bucket_seconds, bucket_start) "
        f"WHERE EXISTS (SELECT FROM {table} r WHERE r.site_id = k.site_id "
        "AND r.bucket_seconds = k.bucket_seconds AND r.bucket_start = k.bucket_start)",
        [[b[0] for b in buckets], [b[1] for b in buckets], [b[2] for b in buckets]],
    )
    return {tuple(found) for found in cursor.fetchall()}


def _replace_postgresql(
    model: type[Model],
    key_fields: tuple[str, ...],
    kind: Any,
    aggregates: Mapping[tuple[Any, ...], Any],
    *,
    lookup: str | None = None,
) -> int:
    """Merge each delta with its stored row here and write the totals back:
    new rows COPYed straight into the table, stored ones COPYed into a
    staging table and updated from it by id (the lookup found them, and the
    site's lock keeps them so; see _add_postgresql for what ON CONFLICT
    would cost). Rows left with no samples are deleted."""
    if not aggregates:
        return 0
    table = model._meta.db_table
    merged = _merged_with_stored_postgresql(model, key_fields, kind, aggregates, lookup or _keys_json(list(aggregates)))
    emptied = [item.pk for item in merged.values() if item.aggregate.samples <= 0 and item.pk is not None]
    created: list[list[Any]] = []
    updated: list[list[Any]] = []
    for key, item in merged.items():
        aggregate = item.aggregate
        if aggregate.samples <= 0:
            continue
        if kind is DenseAggregate:
            values = [*aggregate.sums, *aggregate.sketch_columns()]
        else:
            columns = aggregate.columns()
            values = [columns[c] for c in kind.STORED]
        if item.pk is None:
            created.append([*key, *values])
        else:
            updated.append([item.pk, *values])
    with connection.cursor() as cursor:
        written = copy_rows(cursor, table, [*key_fields, *kind.STORED], created)
        if updated:
            stage = f"{table}_update_stage"
            stage_create(cursor, stage, table, ["id", *kind.STORED])
            copy_rows(cursor, stage, ["id", *kind.STORED], updated)
            assignments = ", ".join(f"{c} = s.{c}" for c in kind.STORED)
            cursor.execute(f"UPDATE {table} r SET {assignments} FROM {stage} s WHERE r.id = s.id")
            written += cursor.rowcount
        if emptied:
            cursor.execute(f"DELETE FROM {table} WHERE id = ANY(%s)", [emptied])
            written += cursor.rowcount
    return written


def _merged_with_stored_postgresql(
    model: type[Model],
    key_fields: tuple[str, ...],
    kind: Any,
    aggregates: Mapping[tuple[Any, ...], Any],
    lookup: str,
) -> dict[tuple[Any, ...], "Stored"]:
    """Each delta merged with its stored row, read in one query: the keys go
    as one JSON array, ``lookup`` (_keys_json of the aggregates' keys, in
    order; far cheaper to send than a typed array per column), joined on the
    unique index."""
    keys = list(aggregates)
    table = model._meta.db_table
    fields = {f.attname: f for f in model._meta.concrete_fields}
    matches = []
    for i, column in enumerate(key_fields):
        internal = fields[column].get_internal_type()
        cast = "" if internal == "CharField" else f"::{fields[column].db_type(connection)}"
        matches.append(f"r.{column} = (k.key ->> {i}){cast}")
    merged = {key: Stored(pk=None, aggregate=delta) for key, delta in aggregates.items()}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT k.n, r.id, {', '.join(f'r.{c}' for c in kind.STORED)} "
            "FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS k(key, n) "
            f"JOIN {table} r ON " + " AND ".join(matches),
            [lookup],
        )
        for n, pk, *values in cursor.fetchall():
            found = merged[keys[n - 1]]
            stored = kind.from_values(values)
            stored.merge(found.aggregate)
            found.pk, found.aggregate = pk, stored
    return merged


def _keys_json(keys: list[tuple[Any, ...]]) -> str:
    """Rollup keys as one JSON array, their bucket starts as ISO 8601 text
    (orjson writes datetimes as isoformat does)."""
    return orjson.dumps(keys).decode()


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
            update_fields=list(kind.STORED),
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
    """Each delta merged with its stored row (the portable path). The rows
    are read by the key's leading columns up to the bucket start (the unique
    index's prefix), then matched on the rest here: a batch touches few
    buckets, and one OR of many full keys would make a query too large to
    plan quickly."""
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
    rows = model._default_manager.filter(condition).values_list("pk", *key_fields, *kind.STORED)
    for pk, *values in rows.iterator(chunk_size=2000):
        found = merged.get(tuple(values[:width]))
        if found is not None:
            stored = kind.from_values(values[width:])
            stored.merge(found.aggregate)
            found.pk, found.aggregate = pk, stored
    return merged
