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
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Q
from django.utils import timezone

from apps.vitals.models import Rating, Rollup
from apps.vitals.sketch import Sketch

# Minute buckets for the recent past, where dashboards zoom in; hour
# buckets beyond, where minute detail is no longer worth its rows.
MINUTE_HORIZON = timedelta(hours=48)

RollupKey = tuple[Any, ...]  # (site_id, bucket_seconds, bucket_start, *Rollup.DIMENSIONS)


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
    def __init__(self, *, now: datetime | None = None) -> None:
        self.now = now or timezone.now()
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
        aggregate.samples += rollup.samples
        aggregate.weight += rollup.weight
        aggregate.good += rollup.good
        aggregate.needs_improvement += rollup.needs_improvement
        aggregate.poor += rollup.poor
        aggregate.value_sum += rollup.value_sum
        aggregate.sketch.merge(Sketch.from_json(rollup.sketch))

    def __len__(self) -> int:
        return len(self.aggregates)

    def apply(self) -> int:
        """Merge into the Rollup table; returns the rows written. Call inside
        the transaction that wrote the raw rows, holding the site locks."""
        if not self.aggregates:
            return 0
        if connection.vendor == "postgresql":
            return self._apply_postgresql()
        existing = _existing_rollups(self.aggregates)
        upserts: list[Rollup] = []
        emptied: list[int] = []
        for key, delta in self.aggregates.items():
            current = existing.get(key)
            merged = _merge(current, delta)
            if merged.samples <= 0:
                if current is not None:
                    emptied.append(current.pk)
                continue
            site_id, seconds, start, *dims = key
            upserts.append(
                Rollup(
                    site_id=site_id,
                    bucket_seconds=seconds,
                    bucket_start=start,
                    **dict(zip(Rollup.DIMENSIONS, dims, strict=True)),
                    samples=merged.samples,
                    weight=merged.weight,
                    good=merged.good,
                    needs_improvement=merged.needs_improvement,
                    poor=merged.poor,
                    value_sum=merged.value_sum,
                    sketch=merged.sketch.to_json(),
                )
            )
        if upserts:
            Rollup.objects.bulk_create(
                upserts,
                batch_size=1000,
                update_conflicts=True,
                unique_fields=["site", "bucket_seconds", "bucket_start", *Rollup.DIMENSIONS],
                update_fields=["samples", "weight", "good", "needs_improvement", "poor", "value_sum", "sketch"],
            )
        if emptied:
            Rollup.objects.filter(pk__in=emptied).delete()
        return len(upserts) + len(emptied)

    def _apply_postgresql(self) -> int:
        """COPY the deltas into a staging table and add them to the rollup
        rows in one INSERT ... ON CONFLICT: the database adds the counts and
        merges the sketches (vitals_sketch_merge, migration 0004), so no
        rollup row makes a round trip through Python."""
        columns = ["site_id", "bucket_seconds", "bucket_start", *Rollup.DIMENSIONS, *_TOTALS, "sketch"]
        key = ", ".join(["site_id", "bucket_seconds", "bucket_start", *Rollup.DIMENSIONS])
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE TEMP TABLE IF NOT EXISTS vitals_rollup_stage ON COMMIT DELETE ROWS AS "
                f"SELECT {', '.join(columns)} FROM vitals_rollup WITH NO DATA"
            )
            # Emptied at commit, but one transaction may apply several deltas
            # (a rebuild does, and so does a caller's enclosing transaction).
            cursor.execute("DELETE FROM vitals_rollup_stage")
            with (
                connection.wrap_database_errors,
                cursor.cursor.copy(f"COPY vitals_rollup_stage ({', '.join(columns)}) FROM STDIN") as copy,
            ):
                for (site_id, seconds, start, *dims), agg in self.aggregates.items():
                    copy.write_row(
                        [
                            site_id,
                            seconds,
                            start,
                            *dims,
                            *(getattr(agg, t) for t in _TOTALS),
                            json.dumps(agg.sketch.to_json()),
                        ]
                    )
            additions = ", ".join(f"{t} = vitals_rollup.{t} + EXCLUDED.{t}" for t in _TOTALS)
            cursor.execute(
                f"INSERT INTO vitals_rollup ({', '.join(columns)}) "
                f"SELECT {', '.join(columns)} FROM vitals_rollup_stage "
                f"ON CONFLICT ({key}) DO UPDATE SET {additions}, "
                "sketch = vitals_sketch_merge(vitals_rollup.sketch, EXCLUDED.sketch)"
            )
            written = cursor.rowcount
            if any(agg.samples < 0 for agg in self.aggregates.values()):
                # Re-reported metrics were taken out: a bucket left empty goes.
                cursor.execute(
                    "DELETE FROM vitals_rollup r USING vitals_rollup_stage s WHERE r.samples <= 0 AND "
                    + " AND ".join(f"r.{c} = s.{c}" for c in key.split(", "))
                )
        return written


_TOTALS = ("samples", "weight", "good", "needs_improvement", "poor", "value_sum")


def _merge(current: Rollup | None, delta: Aggregate) -> Aggregate:
    if current is None:
        return delta
    sketch = Sketch.from_json(current.sketch)
    sketch.merge(delta.sketch)
    return Aggregate(
        samples=current.samples + delta.samples,
        weight=current.weight + delta.weight,
        good=current.good + delta.good,
        needs_improvement=current.needs_improvement + delta.needs_improvement,
        poor=current.poor + delta.poor,
        value_sum=current.value_sum + delta.value_sum,
        sketch=sketch,
    )


def _existing_rollups(aggregates: Iterable[RollupKey]) -> dict[RollupKey, Rollup]:
    """The rollup rows with these keys. Read by (site, bucket) through the
    unique index's leading columns, then matched on the dimensions here: a
    batch touches few buckets, and one OR of many full keys would make a
    query too large to plan quickly."""
    wanted = set(aggregates)
    starts: dict[tuple[int, int], set[datetime]] = {}
    for site_id, seconds, start, *_ in wanted:
        starts.setdefault((site_id, seconds), set()).add(start)
    condition = Q()
    for (site_id, seconds), bucket_starts in starts.items():
        condition |= Q(site_id=site_id, bucket_seconds=seconds, bucket_start__in=bucket_starts)
    found: dict[RollupKey, Rollup] = {}
    for rollup in Rollup.objects.filter(condition):
        key = (
            rollup.site_id,
            rollup.bucket_seconds,
            rollup.bucket_start,
            *(getattr(rollup, d) for d in Rollup.DIMENSIONS),
        )
        if key in wanted:
            found[key] = rollup
    return found
