"""DimensionRollup blocks: they tile any range exactly, and every grouping
the dashboards ask for gives the same counts and histograms as the raw rows,
whichever rollups answer it."""

import base64
import importlib
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from apps.core.timeranges import TimeRange, time_range_preset
from apps.vitals.filters import DashboardQuery
from apps.vitals.models import DimensionRollup, Metric, Site
from apps.vitals.rollups import HOUR, LEVELS, block_start, blocks
from apps.vitals.selectors import BlockWeights, block_weights, grouped_rollups
from apps.vitals.services import metrics_store, rollups_compact
from apps.vitals.sketch import Sketch
from tests.helpers import require
from tests.vitals.test_store import record

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
ROUTES = ("/", "/products/:id", "/cart", "/search")
DEVICES = ("desktop", "mobile", "tablet")


@given(
    start_hours=st.integers(min_value=0, max_value=24 * 400),
    span_hours=st.integers(min_value=1, max_value=24 * 60),
    open_end=st.booleans(),
)
def test_blocks_tile_the_range_with_aligned_blocks(start_hours: int, span_hours: int, open_end: bool) -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(hours=start_hours)
    end = start + timedelta(hours=span_hours)
    found = blocks(start, end, open_end=open_end)
    point = start
    for seconds, begin in found:
        assert seconds in LEVELS
        assert begin == point, "blocks are contiguous"
        assert block_start(begin, seconds) == begin, "blocks are aligned"
        point = begin + timedelta(seconds=seconds)
    assert point >= end
    if not open_end:
        assert point == end, "a closed range is covered exactly"
    # A handful per level, never one block per hour of a long range.
    assert len(found) <= 5 + 3 + 6 + span_hours // (7 * 24) + 6 + 3 + 5


def test_blocks_refuse_a_start_off_the_hour() -> None:
    with pytest.raises(ValueError, match="on the hour"):
        blocks(NOW + timedelta(minutes=1), NOW + timedelta(hours=3), open_end=False)


@pytest.fixture
def seeded(db: None) -> tuple[Site, list[dict[str, Any]]]:
    """Metrics over 20 days (minute buckets for the last two days, hour
    buckets before), in several batches, with sampled and re-reported ones."""
    site = Site.objects.create(name="shop", allowed_origins=["*"])
    rng = random.Random(7)
    records = []
    for n in range(1, 601):
        at = (NOW - timedelta(minutes=rng.randrange(0, 20 * 24 * 60))).replace(second=0)
        name = rng.choice(("LCP", "INP", "CLS"))
        value = rng.lognormvariate(7.6, 0.6) if name != "CLS" else rng.choice((0.0, rng.random() * 0.4))
        records.append(
            record(
                site,
                n,
                value=value,
                name=name,
                at=at,
                route=rng.choice(ROUTES),
                device_class=rng.choice(DEVICES),
                country=rng.choice(("DE", "US", "")),
                weight=rng.choice((1.0, 1.0, 4.0)),
            )
        )
    for start in range(0, len(records), 200):
        metrics_store(records=records[start : start + 200], now=NOW)
    # Some metrics are reported again with a new value (INP and CLS grow).
    again = [{**r, "value": r["value"] * 1.5} for r in records[::25]]
    metrics_store(records=again, now=NOW)
    final = {r["metric_id"]: r for r in records}
    final.update({r["metric_id"]: r for r in again})
    return site, list(final.values())


def _expected(
    records: list[dict[str, Any]], time_range: TimeRange, filters: dict[str, str], by: tuple[str, ...]
) -> dict[tuple[Any, ...], tuple[int, float, Sketch]]:
    out: dict[tuple[Any, ...], tuple[int, float, Sketch]] = {}
    for r in records:
        if not time_range.start <= r["occurred_at"] < time_range.end:
            continue
        if any(r[d] != v for d, v in filters.items()):
            continue
        key = (r["name"], *(r[d] for d in by))
        samples, weight, sketch = out.get(key, (0, 0.0, Sketch()))
        sketch.add(r["value"], r["weight"])
        out[key] = (samples + 1, weight + r["weight"], sketch)
    return out


RANGES = {
    "24h": lambda: time_range_preset("24h", now=NOW),
    "7d": lambda: time_range_preset("7d", now=NOW),
    "28d": lambda: time_range_preset("28d", now=NOW),
    "custom": lambda: TimeRange(start=NOW - timedelta(days=9, hours=5), end=NOW - timedelta(days=1)),
}
QUESTIONS = [
    ({}, ()),
    ({}, ("route",)),
    ({"device_class": "mobile"}, ()),
    ({"route": "/cart"}, ()),
    ({}, ("country",)),
    # Two dimensions at once: answered from Rollup rows.
    ({"device_class": "mobile"}, ("route",)),
    ({"route": "/", "country": "DE"}, ()),
]


def test_grouped_rollups_match_the_raw_rows(seeded: tuple[Site, list[dict[str, Any]]]) -> None:
    site, records = seeded
    for range_name, make_range in RANGES.items():
        time_range = make_range()
        for question_filters, by in QUESTIONS:
            filters = dict(question_filters)
            route = filters.pop("route", None)
            query = DashboardQuery(
                site=site, time_range=time_range, route=route, filters=tuple(sorted(filters.items()))
            )
            if route is not None:
                filters["route"] = route
            got = grouped_rollups(query, by=by)
            expected = _expected(records, time_range, filters, by)
            where = (range_name, question_filters, by)
            assert expected, f"{where} has data"
            assert set(got) == set(expected), where
            for key, (samples, weight, sketch) in expected.items():
                assert got[key].samples == samples, (where, key)
                assert got[key].weight == pytest.approx(weight), (where, key)
                assert got[key].sketch == sketch, (where, key)


def test_per_bucket_groups_match_the_raw_rows(seeded: tuple[Site, list[dict[str, Any]]]) -> None:
    site, records = seeded
    for preset in ("7d", "28d"):
        time_range = time_range_preset(preset, now=NOW)
        got = grouped_rollups(DashboardQuery(site=site, time_range=time_range), per_bucket=True)
        for bucket in time_range.buckets():
            bucket_range = TimeRange(start=bucket, end=bucket + timedelta(seconds=time_range.resolution))
            for (name,), (samples, _, sketch) in _expected(records, bucket_range, {}, ()).items():
                assert got[(name, bucket)].samples == samples
                assert got[(name, bucket)].sketch == sketch


def test_compaction_leaves_dimension_rollups_alone(seeded: tuple[Site, list[dict[str, Any]]]) -> None:
    site, _ = seeded
    before = sorted(
        DimensionRollup.objects.filter(site=site).values_list(
            "dimension", "bucket_seconds", "bucket_start", "name", "value", "samples"
        )
    )
    assert rollups_compact(now=NOW + timedelta(days=3)) > 0
    after = sorted(
        DimensionRollup.objects.filter(site=site).values_list(
            "dimension", "bucket_seconds", "bucket_start", "name", "value", "samples"
        )
    )
    assert after == before
    assert {s for _, s, *_ in after} == set(LEVELS)
    assert block_start(NOW, HOUR) == NOW


def test_blocks_stored_as_json_convert_to_the_same_sketches() -> None:
    """Migration 0008 moves stored blocks from JSON, dense ({"z", "o", "d"})
    or sparse ({"z", "b"}), to the dense columns without changing a weight."""
    migration = importlib.import_module("apps.vitals.migrations.0008_dimension_rollup_dense_columns")
    sketch = Sketch.of([0.0, 0.0, 1.5, 180.0, 2400.0, 2400.0], weight=2.0)
    zero, offset, weights = sketch.to_dense()
    dense_json = {"z": zero, "o": offset, "d": base64.b64encode(weights).decode("ascii")}
    assert migration.sketch_columns(dense_json) == (zero, offset, weights)
    assert migration.sketch_columns(json.dumps(sketch.to_json())) == (zero, offset, weights)
    assert Sketch.from_dense(*migration.sketch_columns(sketch.to_json())) == sketch
    assert migration.sketch_columns({}) == (0.0, 0, b"")


def test_blocks_are_read_in_binary_through_the_instrumented_cursor(
    seeded: tuple[Site, list[dict[str, Any]]], django_assert_num_queries: Any
) -> None:
    """On PostgreSQL the dashboards fetch blocks in the binary format (bytea
    as bytes) with a cursor that is counted, timed and logged like any other."""
    require(connection.vendor == "postgresql", "the binary cursor is PostgreSQL's")
    site, _ = seeded
    query = DashboardQuery(site=site, time_range=time_range_preset("28d", now=NOW))
    labels = {"alias": "default", "vendor": "postgresql"}
    executed = REGISTRY.get_sample_value("django_db_execute_total", labels) or 0.0
    with django_assert_num_queries(1), CaptureQueriesContext(connection) as captured:
        groups = grouped_rollups(query, by=("route",))
    assert REGISTRY.get_sample_value("django_db_execute_total", labels) == executed + 1
    assert "vitals_dimensionrollup" in captured.captured_queries[0]["sql"]
    with cast(Any, connection).binary_cursor() as cursor:
        cursor.execute("SELECT sketch_weights FROM vitals_dimensionrollup WHERE site_id = %s LIMIT 1", [site.pk])
        (weights,) = cursor.fetchone()
    assert isinstance(weights, bytes) and weights and len(weights) % 8 == 0
    # Every stored metric once, as the raw rows count them.
    assert sum(group.samples for group in groups.values()) == Metric.objects.filter(site=site).count()


def test_block_weights_read_before_are_kept_until_the_block_changes(
    seeded: tuple[Site, list[dict[str, Any]]], django_assert_num_queries: Any
) -> None:
    """On PostgreSQL the weights of blocks read before are taken from the
    process (block_weights, by row version) rather than fetched again, and a
    block written since is fetched: the answers are a cold read's."""
    require(connection.vendor == "postgresql", "row versions are PostgreSQL's")
    site, _ = seeded
    query = DashboardQuery(site=site, time_range=time_range_preset("28d", now=NOW))
    scope = (site.pk, "route")
    block_weights.clear()
    cold = grouped_rollups(query, by=("route",))
    kept = block_weights.known(scope)
    assert kept
    with django_assert_num_queries(1):
        warm = grouped_rollups(query, by=("route",))
    assert {key: (g.samples, g.sketch) for key, g in warm.items()} == {
        key: (g.samples, g.sketch) for key, g in cold.items()
    }
    # Not fetched again: the very arrays kept by the first read.
    assert all(block_weights.known(scope)[version] is weights for version, weights in kept.items())

    late = record(site, 10_001, value=9000.0, name="LCP", at=NOW - timedelta(days=10), route="/cart")
    metrics_store(records=[late], now=NOW)
    changed = grouped_rollups(query, by=("route",))
    assert changed[("LCP", "/cart")].samples == cold[("LCP", "/cart")].samples + 1
    assert changed[("LCP", "/cart")].sketch != cold[("LCP", "/cart")].sketch
    block_weights.clear()
    fresh = grouped_rollups(query, by=("route",))
    assert {key: (g.samples, g.sketch) for key, g in changed.items()} == {
        key: (g.samples, g.sketch) for key, g in fresh.items()
    }


def test_block_weights_start_over_when_full() -> None:
    weights = BlockWeights(max_bytes=3 * 8 * 10)
    block = np.zeros(10)
    weights.add((1, "route"), [(1, "1:100", block), (2, "2:100", block)])
    # A row's new version replaces the old one.
    weights.add((1, "route"), [(1, "1:101", block)])
    assert list(weights.known((1, "route"))) == ["1:101", "2:100"]
    weights.add((2, "site"), [(7, "7:5", block), (8, "8:5", block)])
    assert weights.known((1, "route")) == {}
    assert list(weights.known((2, "site"))) == ["7:5", "8:5"]
