"""What the dashboards show against the truth: for a fixed seeded data set,
every percentile of the overview, the routes table, the series and the
breakdowns is within 1% of the exact weighted percentile of the raw rows,
sample counts are exact, and sample-rate weighting is honoured.

The data go through metrics_store (the worker's path), with two sample
rates, re-reported metrics, and four days of page views, so that the answers
merge minute rollups (last 48 hours) and hour rollups (older)."""

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.test import Client

from apps.core.timeranges import HOUR, MINUTE
from apps.vitals.models import Rollup, Site
from apps.vitals.selectors import METRIC_ORDER
from tests.vitals.dashboard_seed import (
    NOW,
    exact,
    latest,
    raw_record,
    re_reports,
    relative_error,
    seeded_records,
    store,
    weighted_percentile,
)

pytestmark = pytest.mark.django_db

TOLERANCE = 0.01
# Whole hours: the custom ranges below cover whole stored buckets.
RANGE = {"start": (NOW - timedelta(days=2)).isoformat(), "end": NOW.isoformat()}
# A 6-hour window inside the last 48 hours: read at minute resolution.
RECENT = {"start": (NOW - timedelta(hours=6)).isoformat(), "end": NOW.isoformat()}


@pytest.fixture
def site() -> Site:
    return Site.objects.create(name="shop", allowed_origins=["*"])


@pytest.fixture
def rows(site: Site) -> list[dict[str, Any]]:
    """The seeded data set, stored; returns the raw rows as they now stand."""
    first = seeded_records(site)
    later = re_reports(first)
    store(first)
    store(later)
    assert later, "the data set must re-report some metrics"
    stored = latest(first, later)
    # Both rollup sizes are in play.
    assert {r.bucket_seconds for r in Rollup.objects.filter(site=site)} == {MINUTE, HOUR}
    return stored


def in_range(start: datetime, end: datetime, **dims: Any) -> Any:
    def where(row: dict[str, Any]) -> bool:
        return start <= row["occurred_at"] < end and all(row[k] == v for k, v in dims.items())

    return where


def get(client: Client, path: str, **params: Any) -> Any:
    response = client.get(f"/api/v1/sites/shop/{path}", params)
    assert response.status_code == 200, response.content
    return response.json()


def check(shown: float | None, truth: float | None, what: str) -> None:
    assert relative_error(shown, truth) <= TOLERANCE, f"{what}: shown {shown}, exact {truth}"


def test_the_overview_cards_match_the_raw_rows(viewer_client: Client, rows: list[dict[str, Any]]) -> None:
    for p in (50, 75, 95):
        overview_matches(viewer_client, rows, p)


def overview_matches(client: Client, rows: list[dict[str, Any]], p: int) -> None:
    summary = get(client, "summary", p=p, **RANGE)
    start, end = NOW - timedelta(days=2), NOW
    assert summary["range"]["resolution"] == HOUR
    for card in summary["cards"]:
        name = card["name"]
        value, samples = exact(rows, p / 100, where=in_range(start, end, name=name))
        check(card["value"], value, f"{name} p{p}")
        assert card["samples"] == samples
        weight = sum(r["weight"] for r in rows if in_range(start, end, name=name)(r))
        assert card["weight"] == pytest.approx(weight)
        previous, _ = exact(rows, p / 100, where=in_range(start - timedelta(days=2), start, name=name))
        check(card["previous_value"], previous, f"{name} p{p} previous period")
        for point in card["sparkline"]:
            bucket = datetime.fromisoformat(point["bucket_start"])
            truth, _ = exact(rows, p / 100, where=in_range(bucket, bucket + timedelta(hours=1), name=name))
            check(point["value"], truth, f"{name} p{p} at {bucket}")
    assert [card["name"] for card in summary["cards"]] == list(METRIC_ORDER)


def test_the_overview_reads_minute_buckets_for_a_short_range(viewer_client: Client, rows: list[dict[str, Any]]) -> None:
    summary = get(viewer_client, "summary", **RECENT)
    assert summary["range"]["resolution"] == MINUTE
    start, end = NOW - timedelta(hours=6), NOW
    for card in summary["cards"]:
        value, samples = exact(rows, 0.75, where=in_range(start, end, name=card["name"]))
        assert samples > 0
        check(card["value"], value, card["name"])
        assert card["samples"] == samples


def test_the_routes_table_matches_the_raw_rows(viewer_client: Client, rows: list[dict[str, Any]]) -> None:
    table = get(viewer_client, "routes", p=90, page_size=500, **RANGE)
    start, end = NOW - timedelta(days=2), NOW
    routes = {r["route"] for r in rows if in_range(start, end)(r)}
    assert {row["route"] for row in table["results"]} == routes
    assert table["count"] == len(routes)
    for row in table["results"]:
        for name, metric in row["metrics"].items():
            value, samples = exact(rows, 0.9, where=in_range(start, end, name=name, route=row["route"]))
            check(metric["value"], value, f"{row['route']} {name}")
            assert metric["samples"] == samples
        views = max(
            sum(r["weight"] for r in rows if in_range(start, end, name=name, route=row["route"])(r))
            for name in METRIC_ORDER
        )
        assert row["pageviews"] == pytest.approx(views)


def test_the_series_match_the_raw_rows(viewer_client: Client, rows: list[dict[str, Any]]) -> None:
    for name in METRIC_ORDER:
        series_matches(viewer_client, rows, name)


def series_matches(client: Client, rows: list[dict[str, Any]], name: str) -> None:
    series = get(client, "series", name=name, device_class="mobile", **RANGE)
    assert len(series["points"]) == 48
    for point in series["points"]:
        bucket = datetime.fromisoformat(point["bucket_start"])
        where = in_range(bucket, bucket + timedelta(hours=1), name=name, device_class="mobile")
        value, samples = exact(rows, 0.75, where=where)
        check(point["value"], value, f"{name} at {bucket}")
        assert point["samples"] == samples
    assert {m["release"] for m in series["releases"]} == {"2026.11.1", "2026.11.2"}


def test_breakdowns_match_the_raw_rows(viewer_client: Client, rows: list[dict[str, Any]]) -> None:
    for dimension in ("device_class", "browser", "country", "connection", "navigation_type", "release", "route"):
        breakdown_matches(viewer_client, rows, dimension)


def breakdown_matches(client: Client, rows: list[dict[str, Any]], dimension: str) -> None:
    start, end = NOW - timedelta(days=4), NOW
    answer = get(
        client,
        "breakdown",
        name="LCP",
        dimension=dimension,
        p=75,
        start=start.isoformat(),
        end=end.isoformat(),
    )
    values = {r[dimension] for r in rows if r["name"] == "LCP"}
    assert {row["value"] for row in answer["rows"]} == values
    for row in answer["rows"]:
        value, samples = exact(rows, 0.75, where=in_range(start, end, name="LCP", **{dimension: row["value"]}))
        check(row["percentile_value"], value, f"{dimension}={row['value']}")
        assert row["samples"] == samples


def test_a_re_reported_metric_counts_once_with_its_latest_value(
    viewer_client: Client, site: Site, rows: list[dict[str, Any]]
) -> None:
    start, end = NOW - timedelta(days=2), NOW
    inp = next(c for c in get(viewer_client, "summary", **RANGE)["cards"] if c["name"] == "INP")
    _, samples = exact(rows, 0.75, where=in_range(start, end, name="INP"))
    assert inp["samples"] == samples
    # Against the data as first reported, the count is the same and the value is not.
    first = [r for r in seeded_records(site) if in_range(start, end, name="INP")(r)]
    assert len(first) == samples
    assert weighted_percentile([(r["value"], r["weight"]) for r in first], 0.75) != pytest.approx(inp["value"])


def test_sample_rate_weighting_moves_the_percentile(viewer_client: Client, site: Site) -> None:
    """300 fast LCPs at sample rate 1 and 60 slow ones at 0.25: unweighted,
    a sixth are slow and p75 is fast; weighted, 240 of 540 page views are
    slow and p75 is slow. The API must show the weighted one."""
    at = NOW - timedelta(hours=3)
    fast = [raw_record(site, n, name="LCP", value=1000.0 + n, at=at, weight=1.0) for n in range(300)]
    slow = [raw_record(site, 1000 + n, name="LCP", value=5000.0 + n, at=at, weight=4.0) for n in range(60)]
    store(fast + slow)
    unweighted = weighted_percentile([(r["value"], 1.0) for r in fast + slow], 0.75)
    weighted = weighted_percentile([(r["value"], r["weight"]) for r in fast + slow], 0.75)
    assert unweighted is not None and unweighted < 1300
    assert weighted is not None and weighted > 5000

    lcp = get(viewer_client, "summary", **RECENT)["cards"][0]
    assert lcp["name"] == "LCP"
    check(lcp["value"], weighted, "weighted p75")
    assert lcp["samples"] == 360
    assert lcp["weight"] == pytest.approx(540)
    assert lcp["poor_share"] == pytest.approx(240 / 540)
    route = get(viewer_client, "routes", **RECENT)["results"][0]
    check(route["metrics"]["LCP"]["value"], weighted, "routes table p75")
    breakdown = get(viewer_client, "breakdown", name="LCP", dimension="device_class", **RECENT)["rows"][0]
    check(breakdown["percentile_value"], weighted, "breakdown p75")


def test_questions_about_two_dimensions_match_the_raw_rows(viewer_client: Client, rows: list[dict[str, Any]]) -> None:
    """A filter plus a breakdown (or a route plus a filter) is finer than the
    one-dimension rollups: the answer merges the full rollup rows, and must
    be as right."""
    start, end = NOW - timedelta(days=2), NOW
    answer = get(viewer_client, "breakdown", name="INP", dimension="browser", device_class="mobile", p=99, **RANGE)
    assert answer["rows"]
    for row in answer["rows"]:
        where = in_range(start, end, name="INP", device_class="mobile", browser=row["value"])
        value, samples = exact(rows, 0.99, where=where)
        check(row["percentile_value"], value, f"mobile {row['value']}")
        assert row["samples"] == samples
    summary = get(viewer_client, "summary", route="/checkout", country="DE", **RANGE)
    for card in summary["cards"]:
        where = in_range(start, end, name=card["name"], route="/checkout", country="DE")
        value, samples = exact(rows, 0.75, where=where)
        check(card["value"], value, f"/checkout DE {card['name']}")
        assert card["samples"] == samples
