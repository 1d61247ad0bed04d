"""Raw rows and rollups: idempotent writes, exact incremental rollups, the
rebuild, compaction, partitions and retention."""

import io
import logging
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.vitals.beacon import REPORTED_BEFORE, rating_for
from apps.vitals.models import AttributionRollup, DimensionRollup, Metric, Rollup, Site
from apps.vitals.partitions import drop_partitions_before, ensure_partitions, existing_partitions
from apps.vitals.rollups import LEVELS, MINUTE_HORIZON
from apps.vitals.services import metrics_drop_expired, metrics_store, rollups_compact, rollups_rebuild
from apps.vitals.sketch import RELATIVE_ACCURACY, Sketch
from tests.helpers import require

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def record(site: Site, n: int, *, value: float, name: str = "LCP", at: datetime = NOW, **dims: Any) -> dict[str, Any]:
    row = {
        "site_id": site.pk,
        "day": at.date(),
        "occurred_at": at,
        "received_at": at,
        "metric_id": f"v6-{int(at.timestamp() * 1000)}-{n}",
        "pageview": f"pv-{n}",
        "name": name,
        "value": value,
        "rating": rating_for(name, value),
        "weight": 1.0,
        "route": "/",
        "path": "/",
        "host": "shop.example.com",
        "release": "",
        "navigation_type": "navigate",
        "connection": "4g",
        "device_class": "desktop",
        "browser": "Chrome",
        "browser_major": "131",
        "os": "Windows",
        "country": "",
        "attribution": {},
    }
    row.update(dims)
    return row


@pytest.fixture
def site() -> Site:
    return Site.objects.create(name="shop", allowed_origins=["*"])


def rollup_state(site: Site) -> dict[tuple[Any, ...], tuple[int, float, float, float, float, Sketch]]:
    """Every Rollup and DimensionRollup row of ``site``, comparable."""
    state = {}
    rows: list[tuple[tuple[Any, ...], Rollup | DimensionRollup]] = [
        ((r.bucket_seconds, r.bucket_start, *(getattr(r, d) for d in Rollup.DIMENSIONS)), r)
        for r in Rollup.objects.filter(site=site)
    ]
    rows += [
        (("dim", r.dimension, r.bucket_seconds, r.bucket_start, r.name, r.value), r)
        for r in DimensionRollup.objects.filter(site=site)
    ]
    for key, r in rows:
        state[key] = (
            r.samples,
            round(r.weight, 6),
            round(r.good, 6),
            round(r.poor, 6),
            round(r.value_sum, 3),
            Sketch.from_dense(r.sketch_zero, r.sketch_offset, r.sketch_weights)
            if isinstance(r, DimensionRollup)
            else Sketch.from_json(r.sketch),
        )
    return state


def test_writing_the_same_batch_twice_changes_nothing(site: Site) -> None:
    batch = [record(site, n, value=1000.0 + n) for n in range(20)]
    first = metrics_store(records=batch, now=NOW)
    before = rollup_state(site)
    again = metrics_store(records=batch, now=NOW)
    assert (first.inserted, again.inserted, again.unchanged) == (20, 0, 20)
    assert Metric.objects.count() == 20
    assert rollup_state(site) == before


def test_a_later_value_replaces_the_earlier_one_in_rows_and_rollups(site: Site) -> None:
    metrics_store(records=[record(site, 1, value=0.05, name="CLS")], now=NOW)
    result = metrics_store(records=[record(site, 1, value=0.4, name="CLS")], now=NOW)
    assert result.replaced == 1
    assert Metric.objects.get().value == 0.4
    rollup = Rollup.objects.get()
    assert (rollup.samples, rollup.good, rollup.poor) == (1, 0, 1)
    assert Sketch.from_json(rollup.sketch).quantile(0.5) == pytest.approx(0.4, rel=RELATIVE_ACCURACY)


def first(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` as the beacon of a metric's first report makes it."""
    return {**row, REPORTED_BEFORE: False}


def test_first_reports_written_twice_are_stored_and_counted_once(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    # A stream entry delivered again after its batch committed: the second
    # write of first reports meets stored rows (on PostgreSQL the COPY is
    # refused and undone, and the rows go the other way).
    caplog.set_level(logging.INFO, logger="apps.vitals.services")
    fallback = "first reports were stored already"
    batch = [first(record(site, n, value=1000.0 + n)) for n in range(20)]
    written = metrics_store(records=batch, now=NOW)
    assert fallback not in caplog.text
    before = rollup_state(site)
    again = metrics_store(records=batch[5:] + [first(record(site, 20, value=3000.0))], now=NOW)
    assert (fallback in caplog.text) is (connection.vendor == "postgresql")
    assert (written.inserted, again.inserted, again.unchanged) == (20, 1, 15)
    assert Metric.objects.count() == 21
    assert sum(Rollup.objects.values_list("samples", flat=True)) == 21
    assert rollup_state(site) != before
    metrics_store(records=[record(site, 20, value=3000.0)], now=NOW)
    assert sum(Rollup.objects.values_list("samples", flat=True)) == 21


def test_first_and_later_reports_in_one_batch(site: Site) -> None:
    metrics_store(records=[first(record(site, n, value=0.05, name="CLS")) for n in range(4)], now=NOW)
    later = [record(site, n, value=0.4, name="CLS") for n in range(2)]
    fresh = [first(record(site, n, value=0.01, name="CLS")) for n in range(4, 7)]
    result = metrics_store(records=fresh + later, now=NOW)
    assert (result.inserted, result.replaced, result.unchanged) == (3, 2, 0)
    assert sorted(Metric.objects.values_list("value", flat=True)) == [0.01] * 3 + [0.05] * 2 + [0.4] * 2
    rollup = Rollup.objects.get()
    assert (rollup.samples, rollup.good, rollup.poor) == (7, 5, 2)


def test_within_a_batch_the_last_report_wins(site: Site) -> None:
    metrics_store(records=[record(site, 1, value=100.0, name="INP"), record(site, 1, value=300.0, name="INP")], now=NOW)
    assert Metric.objects.get().value == 300.0
    assert Rollup.objects.get().samples == 1


def test_recent_metrics_roll_up_by_minute_and_older_ones_by_hour(site: Site) -> None:
    old = NOW - MINUTE_HORIZON - timedelta(hours=3)
    metrics_store(
        records=[record(site, 1, value=900.0, at=NOW - timedelta(seconds=30)), record(site, 2, value=900.0, at=old)],
        now=NOW,
    )
    sizes = dict(Rollup.objects.values_list("bucket_seconds", "bucket_start"))
    assert sizes[Rollup.MINUTE] == (NOW - timedelta(seconds=30)).replace(second=0)
    assert sizes[Rollup.HOUR] == old.replace(minute=0, second=0)


def test_compaction_folds_old_minutes_into_hours_without_changing_totals(site: Site) -> None:
    start = NOW - timedelta(hours=2)
    metrics_store(
        records=[record(site, n, value=500.0 + n, at=start + timedelta(minutes=n)) for n in range(90)], now=start
    )
    assert set(Rollup.objects.values_list("bucket_seconds", flat=True)) == {Rollup.MINUTE}
    later = NOW + MINUTE_HORIZON
    folded = rollups_compact(now=later)
    assert folded == 90
    hours = list(Rollup.objects.filter(site=site))
    assert {h.bucket_seconds for h in hours} == {Rollup.HOUR}
    assert sum(h.samples for h in hours) == 90
    merged = Sketch()
    for h in hours:
        merged.merge(Sketch.from_json(h.sketch))
    assert merged == Sketch.of(500.0 + n for n in range(90))


dimension = st.sampled_from(["/", "/cart", "/products/:id"])
metric_rows = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=40),  # metric id: repeats are re-reports
        st.sampled_from(["LCP", "CLS", "INP"]),
        st.floats(min_value=0, max_value=20_000, allow_nan=False),
        st.integers(min_value=0, max_value=72 * 60),  # minutes before NOW
        dimension,
        st.sampled_from([1.0, 0.5, 0.1]),  # sample rate
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(metric_rows, st.integers(min_value=1, max_value=5))
def test_incremental_rollups_equal_a_rebuild_and_percentiles_are_within_one_percent(
    site: Site, rows: list[tuple[int, str, float, int, str, float]], batches: int
) -> None:
    Metric.objects.filter(site=site).delete()
    Rollup.objects.filter(site=site).delete()
    DimensionRollup.objects.filter(site=site).delete()
    records = []
    for n, _, value, _, _, _ in rows:
        # A re-report keeps its page view's time and dimensions: they come
        # from the metric's first report, as the browser's metric id does.
        first = next(r for r in rows if r[0] == n)
        at = (NOW - timedelta(minutes=first[3])).replace(second=0)
        value = min(value, 100.0) if first[1] == "CLS" else value
        records.append(record(site, n, value=value, name=first[1], at=at, route=first[4], weight=1 / first[5]))
    # Incremental: the records arrive in several batches.
    size = max(1, len(records) // batches)
    for start in range(0, len(records), size):
        metrics_store(records=records[start : start + size], now=NOW)
    incremental = rollup_state(site)
    rollups_rebuild(site=site, since=NOW - timedelta(days=4), until=NOW, now=NOW)
    assert rollup_state(site) == incremental

    # Every percentile from the merged rollups is within 1% of the exact one.
    final: dict[int, dict[str, Any]] = {}
    for rec in records:
        final[int(rec["metric_id"].rsplit("-", 1)[1])] = rec
    for name in {r["name"] for r in final.values()}:
        exact = sorted((r["value"], r["weight"]) for r in final.values() if r["name"] == name)
        merged = Sketch()
        for rollup in Rollup.objects.filter(site=site, name=name):
            merged.merge(Sketch.from_json(rollup.sketch))
        for q in (0.5, 0.75, 0.95):
            estimate = merged.quantile(q)
            expected = _weighted_quantile(exact, q)
            assert estimate is not None
            if expected <= 1e-6:
                assert estimate == 0.0
            else:
                assert abs(estimate - expected) <= RELATIVE_ACCURACY * expected + 1e-9, (name, q, estimate, expected)


def _weighted_quantile(ordered: list[tuple[float, float]], q: float) -> float:
    total = sum(w for _, w in ordered)
    cumulative = 0.0
    for value, weight in ordered:
        cumulative += weight
        if cumulative >= q * total - 1e-9:
            return value
    return ordered[-1][0]


def test_the_rebuild_command(site: Site) -> None:
    metrics_store(records=[record(site, n, value=100.0 * n, at=datetime.now(UTC)) for n in range(1, 6)])
    Rollup.objects.all().delete()
    out = io.StringIO()
    call_command("vitals_rebuild_rollups", "--since", "2h", "--site", "shop", stdout=out)
    assert "shop:" in out.getvalue()
    assert sum(Rollup.objects.values_list("samples", flat=True)) == 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday-ish"], "neither an ISO date/time nor a span"),
        (["--since", "2h", "--until", "3h"], "--until must be after --since"),
        (["--since", "2h", "--site", "nope"], "No such site: nope"),
    ],
)
def test_the_rebuild_command_explains_bad_arguments(site: Site, args: list[str], message: str) -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=message):
        call_command("vitals_rebuild_rollups", *args, stdout=io.StringIO())


def test_retention_removes_raw_rows_past_each_sites_horizon(site: Site) -> None:
    short = Site.objects.create(name="short", allowed_origins=["*"], retention_days=3)
    site.retention_days = 30
    site.save()
    today = datetime.now(UTC)
    metrics_store(
        records=[
            record(site, 1, value=1.0, at=today - timedelta(days=10)),
            record(short, 2, value=1.0, at=today - timedelta(days=10)),
            record(short, 3, value=1.0, at=today - timedelta(days=1)),
            record(site, 4, value=1.0, at=today - timedelta(days=40)),
        ]
    )
    result = metrics_drop_expired()
    remaining = sorted(Metric.objects.values_list("pageview", flat=True))
    assert remaining == ["pv-1", "pv-3"]
    if connection.vendor == "postgresql":
        assert result["partitions_dropped"] >= 1
    # Rollups stay: dashboards keep history beyond raw retention.
    assert Rollup.objects.filter(site=site).count() == 2


def test_partitions_are_created_ahead_and_dropped_whole() -> None:
    require(connection.vendor == "postgresql", "partitions are PostgreSQL's")
    days = [NOW.date() + timedelta(days=n) for n in range(3)]
    created = ensure_partitions(days)
    assert set(created) <= set(days)
    assert set(days) <= set(existing_partitions())
    assert ensure_partitions(days) == [] or set(ensure_partitions(days)) <= set(days)
    dropped = drop_partitions_before(days[2])
    assert set(days[:2]) <= set(dropped)
    assert days[2] in existing_partitions()


def test_the_maintenance_command_reports_what_it_did(site: Site) -> None:
    out = io.StringIO()
    call_command("vitals_maintain", stdout=out)
    assert "partitions created:" in out.getvalue()
    assert "minute rollups folded into hours:" in out.getvalue()


def test_the_demo_command_writes_realistic_data_through_ingestion() -> None:
    out = io.StringIO()
    call_command("vitals_demo", "--site", "demo", "--pageviews", "300", "--days", "2", "--seed", "7", stdout=out)
    assert "Wrote 1,500 metrics from 300 page views" in out.getvalue()
    assert "100%" in out.getvalue()
    demo = Site.objects.get(name="demo")
    assert Metric.objects.filter(site=demo).count() == 1500
    assert sum(Rollup.objects.filter(site=demo).values_list("samples", flat=True)) == 1500
    routes = set(Metric.objects.filter(site=demo).values_list("route", flat=True))
    assert {"/", "/products/:id", "/cart"} <= routes
    assert set(Metric.objects.filter(site=demo).values_list("device_class", flat=True)) == {
        "mobile",
        "tablet",
        "desktop",
    }
    # Field-data shape: most CLS values are exactly 0, LCP's median is near 2 s.
    lcp = sorted(Metric.objects.filter(site=demo, name="LCP").values_list("value", flat=True))
    assert 1000 < lcp[len(lcp) // 2] < 4000


@pytest.mark.parametrize(
    ("args", "message"), [(["--pageviews", "0"], "at least 1"), (["--days", "0"], "between 1 and 400")]
)
def test_the_demo_command_explains_bad_arguments(args: list[str], message: str) -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=message):
        call_command("vitals_demo", *args, stdout=io.StringIO())


def test_random_batches_never_double_count(site: Site) -> None:
    rng = random.Random(3)
    # Some claim to be first reports, wrongly once stored: no matter.
    records = [
        {**record(site, n, value=float(rng.randint(100, 9000))), REPORTED_BEFORE: rng.random() < 0.5}
        for n in range(200)
    ]
    for _ in range(4):
        metrics_store(records=rng.sample(records, 120), now=NOW)
    stored = Metric.objects.count()
    assert sum(Rollup.objects.values_list("samples", flat=True)) == stored


def attribution_state(site: Site) -> dict[tuple[Any, ...], tuple[int, float, float, dict[str, float]]]:
    return {
        (r.bucket_seconds, r.bucket_start, r.name, r.route, r.kind, r.key): (
            r.samples,
            round(r.weight, 6),
            round(r.excess_sum, 3),
            {phase: round(total, 3) for phase, total in r.phase_sums.items()},
        )
        for r in AttributionRollup.objects.filter(site=site)
    }


def test_one_batch_over_many_hours_and_blocks_equals_one_metric_at_a_time() -> None:
    """The worker sums a whole batch at once (RollupDelta, column-wise):
    spread over two weeks of hours, day and week blocks, minute and hour
    buckets, with sampled, zero-valued and attributed metrics, then a batch
    that re-delivers some and re-reports others, it must write the rollups
    that the same metrics written one by one do."""
    rng = random.Random(11)
    whole, single = (Site.objects.create(name=name, allowed_origins=["*"]) for name in ("whole", "single"))
    specs = []
    for n in range(300):
        at = NOW - timedelta(minutes=rng.randrange(0, 14 * 24 * 60), seconds=rng.randrange(60))
        name = rng.choice(("LCP", "INP", "CLS", "TTFB"))
        value = rng.choice((0.0, rng.random() * 0.3)) if name == "CLS" else rng.lognormvariate(6.5, 0.8)
        attribution = {"target": rng.choice(("img.hero", "h1")), "timeToFirstByte": 120.5} if name == "LCP" else {}
        dims = {
            "route": rng.choice(("/", "/cart", "/products/:id")),
            "device_class": rng.choice(("desktop", "mobile")),
            "country": rng.choice(("DE", "US", "")),
            "weight": rng.choice((1.0, 1.0, 1 / 0.3)),
            "attribution": attribution,
        }
        specs.append((n, value, name, at, dims))

    def batch(site: Site, chosen: list[tuple[Any, ...]], grow: float = 1.0) -> list[dict[str, Any]]:
        return [record(site, n, value=value * grow, name=name, at=at, **dims) for n, value, name, at, dims in chosen]

    metrics_store(records=batch(whole, specs), now=NOW)
    for spec in specs:
        metrics_store(records=batch(single, [spec]), now=NOW)
    # Re-delivered unchanged, re-reported larger, and new ones, together.
    again = batch(whole, specs[:40]) + batch(whole, specs[40:80], grow=1.5)
    metrics_store(records=again, now=NOW)
    for rows in (batch(single, specs[:40]), batch(single, specs[40:80], grow=1.5)):
        for row in rows:
            metrics_store(records=[row], now=NOW)

    assert rollup_state(whole) == rollup_state(single)
    assert attribution_state(whole) == attribution_state(single)
    assert sum(Rollup.objects.filter(site=whole).values_list("samples", flat=True)) == 300
    levels = DimensionRollup.objects.filter(site=whole, dimension="site").values_list("bucket_seconds", "samples")
    assert {seconds: 0 for seconds, _ in levels} == dict.fromkeys(LEVELS, 0)
    for seconds in LEVELS:
        assert sum(s for level, s in levels if level == seconds) == 300
