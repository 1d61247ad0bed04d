"""The Web Vitals JSON API: who may read it, what it answers to bad input,
pagination, and the number of queries each endpoint makes (all from
rollups: none reads raw metric rows)."""

import re
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from pytest_django import DjangoAssertNumQueries

from apps.vitals.models import Site
from apps.vitals.selectors import COMPARE_METHOD, METRIC_ORDER
from tests.vitals.dashboard_seed import NOW, latest, raw_record, re_reports, seeded_records, store

pytestmark = pytest.mark.django_db

RANGE: dict[str, Any] = {"start": (NOW - timedelta(days=2)).isoformat(), "end": NOW.isoformat()}
# (endpoint, parameters it needs)
SITE_ENDPOINTS = [
    ("summary", {}),
    ("routes", {}),
    ("series", {"name": "LCP"}),
    ("histogram", {"name": "CLS"}),
    ("breakdown", {"name": "INP", "dimension": "browser"}),
    ("attribution", {"name": "LCP"}),
    ("compare", {}),
    ("export", {"kind": "routes"}),
]
URLS: list[tuple[str, dict[str, str]]] = [("/api/v1/sites/", {})] + [
    (f"/api/v1/sites/shop/{e}", p) for e, p in SITE_ENDPOINTS
]


@pytest.fixture
def site() -> Site:
    return Site.objects.create(name="shop", allowed_origins=["*"])


@pytest.fixture
def stored(site: Site) -> list[dict[str, Any]]:
    first = seeded_records(site, pageviews=120)
    later = re_reports(first)
    store(first)
    store(later)
    return latest(first, later)


def body(response: Any) -> bytes:  # Any: the stubs know no streaming_content
    return b"".join(response.streaming_content) if response.streaming else bytes(response.content)


# --- Permissions --------------------------------------------------------------


@pytest.mark.parametrize(("url", "params"), URLS)
def test_anonymous_clients_are_asked_to_authenticate(site: Site, url: str, params: dict[str, str]) -> None:
    response = Client().get(url, params)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("url", "params"), URLS)
def test_signed_in_users_who_are_not_staff_are_refused(
    site: Site, outsider_client: Client, url: str, params: dict[str, str]
) -> None:
    assert outsider_client.get(url, params).status_code == 403


@pytest.mark.parametrize(("url", "params"), URLS)
def test_staff_and_read_tokens_may_read(
    site: Site, viewer_client: Client, read_token: str, url: str, params: dict[str, str]
) -> None:
    assert viewer_client.get(url, params).status_code == 200
    assert Client().get(url, params, HTTP_AUTHORIZATION=f"Bearer {read_token}").status_code == 200


@pytest.mark.parametrize(("url", "params"), URLS)
def test_a_revoked_or_made_up_token_is_refused(site: Site, url: str, params: dict[str, str]) -> None:
    assert Client().get(url, params, HTTP_AUTHORIZATION="Bearer phk_made-up").status_code == 401


# --- Bad input ------------------------------------------------------------------


@pytest.mark.parametrize(("endpoint", "params"), SITE_ENDPOINTS)
def test_an_unknown_site_is_a_404(viewer_client: Client, endpoint: str, params: dict[str, str]) -> None:
    response = viewer_client.get(f"/api/v1/sites/nowhere/{endpoint}", params)
    assert response.status_code == 404
    assert response.json() == {"detail": "No site named 'nowhere'."}


BAD = [
    # (endpoint, parameters, the field named in the 400)
    ("summary", {"range": "3w"}, "range"),
    ("summary", {"p": "80"}, "p"),
    ("summary", {"p": "x"}, "p"),
    ("summary", {"start": "yesterday", "range": "custom"}, "start"),
    ("summary", {"range": "custom", "start": NOW.isoformat()}, "start"),
    ("summary", {"start": NOW.isoformat(), "end": (NOW - timedelta(hours=1)).isoformat()}, "end"),
    ("summary", {"start": (NOW - timedelta(days=500)).isoformat(), "end": NOW.isoformat()}, "end"),
    ("summary", {"device_class": "watch"}, "device_class"),
    ("summary", {"country": "de"}, "country"),
    ("summary", {"connection": "5g"}, "connection"),
    ("summary", {"navigation_type": "teleport"}, "navigation_type"),
    ("summary", {"route": "/" + "x" * 300}, "route"),
    ("summary", {"release": "r" * 101}, "release"),
    ("summary", {"browser": "b" * 41}, "browser"),
    ("routes", {"sort": "speed"}, "sort"),
    ("routes", {"order": "up"}, "order"),
    ("routes", {"min_samples": "-1"}, "min_samples"),
    ("routes", {"page": "0"}, "page"),
    ("routes", {"page": "two"}, "page"),
    ("routes", {"page": "99"}, "page"),
    ("routes", {"page_size": "501"}, "page_size"),
    ("routes", {"search": "s" * 201}, "search"),
    ("series", {}, "name"),
    ("series", {"name": "FID"}, "name"),
    ("histogram", {"name": "lcp"}, "name"),
    ("breakdown", {"name": "LCP"}, "dimension"),
    ("breakdown", {"name": "LCP", "dimension": "os"}, "dimension"),
    ("breakdown", {"dimension": "browser"}, "name"),
    ("attribution", {}, "name"),
    ("attribution", {"name": "FID"}, "name"),
    ("attribution", {"name": "LCP", "limit": "0"}, "limit"),
    ("attribution", {"name": "LCP", "limit": "101"}, "limit"),
    ("compare", {"mode": "weeks"}, "mode"),
    ("compare", {"mode": "releases", "a_release": "2026.11.1"}, "b_release"),
    ("compare", {"a_start": NOW.isoformat()}, "a_end"),
    ("compare", {"a_start": "soon", "a_end": "x", "b_start": "y", "b_end": "z"}, "a_start"),
    (
        "compare",
        {
            "a_start": NOW.isoformat(),
            "a_end": (NOW - timedelta(hours=1)).isoformat(),
            "b_start": (NOW - timedelta(hours=2)).isoformat(),
            "b_end": NOW.isoformat(),
        },
        "a_end",
    ),
    ("compare", {"by_route": "perhaps"}, "by_route"),
    ("export", {}, "kind"),
    ("export", {"kind": "pdf"}, "kind"),
    ("export", {"kind": "routes", "format": "xlsx"}, "format"),
    ("export", {"kind": "series"}, "name"),
    ("export", {"kind": "raw", "name": "XYZ"}, "name"),
    ("export", {"kind": "raw", "limit": "0"}, "limit"),
    ("export", {"kind": "raw", "limit": "100001"}, "limit"),
    ("export", {"kind": "raw", "after": "not-a-cursor"}, "after"),
    ("export", {"kind": "raw", "after": "MjAyNi0xMS0yN3w0Mg"}, "after"),  # "2026-11-27|42": no time zone
    ("export", {"kind": "routes", "sort": "x"}, "sort"),
]


@pytest.mark.parametrize(("endpoint", "params", "field"), BAD)
def test_a_bad_parameter_is_a_400_naming_it(
    viewer_client: Client, site: Site, endpoint: str, params: dict[str, str], field: str
) -> None:
    response = viewer_client.get(f"/api/v1/sites/shop/{endpoint}", params)
    assert response.status_code == 400, body(response)
    assert response["Content-Type"] == "application/json"
    errors = response.json()
    assert field in errors, errors
    assert all(isinstance(m, str) and m for m in errors[field])


def test_every_bad_field_is_named_at_once(viewer_client: Client, site: Site) -> None:
    response = viewer_client.get("/api/v1/sites/shop/routes", {"p": "1", "country": "x", "sort": "y", "page": "z"})
    assert response.status_code == 400
    assert set(response.json()) == {"p", "country", "sort", "page"}


# --- Answers and pagination -------------------------------------------------------


def test_the_sites_list_is_paginated_and_links_each_sites_endpoints(viewer_client: Client, site: Site) -> None:
    Site.objects.create(name="blog")
    first = viewer_client.get("/api/v1/sites/", {"limit": 1}).json()
    assert first["count"] == Site.objects.count()
    assert first["previous"] is None
    assert [s["name"] for s in first["results"]] == ["blog"]
    names = []
    page: dict[str, Any] | None = first
    while page is not None:
        names += [s["name"] for s in page["results"]]
        page = viewer_client.get(page["next"]).json() if page["next"] else None
    assert names == sorted(Site.objects.values_list("name", flat=True))
    shop = next(s for s in viewer_client.get("/api/v1/sites/").json()["results"] if s["name"] == "shop")
    assert set(shop) == {"name", "is_builtin", "sample_rate", "retention_days", "links"}
    assert shop["links"]["summary"] == "http://testserver/api/v1/sites/shop/summary"
    for link in shop["links"].values():
        assert viewer_client.get(link, {"name": "LCP", "dimension": "route", "kind": "routes"}).status_code == 200


def test_the_summary_uses_the_selectors_field_names(viewer_client: Client, stored: list[dict[str, Any]]) -> None:
    summary = viewer_client.get("/api/v1/sites/shop/summary", RANGE).json()
    assert set(summary) == {
        "site",
        "range",
        "percentile",
        "route",
        "filters",
        "cards",
        "core_web_vitals_pass",
        "score",
        "score_parts",
    }
    assert summary["site"] == "shop"
    assert summary["range"] == {
        "start": "2026-11-25T12:00:00Z",
        "end": "2026-11-27T12:00:00Z",
        "resolution": 3600,
        "preset": "custom",
        "label": "2026-11-25 12:00 – 2026-11-27 12:00 UTC",
    }
    assert summary["percentile"] == 75
    card = summary["cards"][0]
    assert set(card) == {
        "name",
        "unit",
        "value",
        "rating",
        "samples",
        "weight",
        "good_share",
        "needs_improvement_share",
        "poor_share",
        "previous_value",
        "change",
        "sparkline",
    }
    assert len(card["sparkline"]) == 48
    assert set(card["sparkline"][0]) == {"bucket_start", "value"}
    assert [p["name"] for p in summary["score_parts"]] == ["LCP", "INP", "CLS", "FCP"]
    assert 0 <= summary["score"] <= 100


def test_filters_narrow_the_answer(viewer_client: Client, stored: list[dict[str, Any]]) -> None:
    everyone = viewer_client.get("/api/v1/sites/shop/summary", RANGE).json()
    mobile = viewer_client.get("/api/v1/sites/shop/summary", {**RANGE, "device_class": "mobile"}).json()
    assert mobile["filters"] == {"device_class": "mobile"}
    mobile_lcp = sum(
        1
        for r in stored
        if r["name"] == "LCP" and r["device_class"] == "mobile" and r["occurred_at"] >= NOW - timedelta(days=2)
    )
    assert mobile["cards"][0]["samples"] == mobile_lcp < everyone["cards"][0]["samples"]


def test_routes_pages_return_every_route_once(viewer_client: Client, stored: list[dict[str, Any]]) -> None:
    pages = []
    url: str | None = "/api/v1/sites/shop/routes?" + urlencode({**RANGE, "page_size": 2})
    while url:
        pages.append(viewer_client.get(url).json())
        url = pages[-1]["next"]
    routes = {r["route"] for r in stored if r["occurred_at"] >= NOW - timedelta(days=2)}
    seen = [row["route"] for page in pages for row in page["results"]]
    assert sorted(seen) == sorted(routes)
    assert len(pages) == 3
    assert all(page["count"] == len(routes) for page in pages)
    assert pages[0]["previous"] is None
    for before, after in zip(pages, pages[1:], strict=False):
        assert viewer_client.get(after["previous"]).json()["results"] == before["results"]


def test_routes_sort_search_and_floor(viewer_client: Client, stored: list[dict[str, Any]]) -> None:
    by_lcp = viewer_client.get("/api/v1/sites/shop/routes", {**RANGE, "sort": "LCP", "min_samples": 0}).json()
    values = [row["metrics"]["LCP"]["value"] for row in by_lcp["results"]]
    assert values == sorted(values, reverse=True)
    ascending = viewer_client.get(
        "/api/v1/sites/shop/routes", {**RANGE, "sort": "LCP", "order": "asc", "min_samples": 0}
    ).json()
    assert [row["metrics"]["LCP"]["value"] for row in ascending["results"]] == sorted(values)
    found = viewer_client.get("/api/v1/sites/shop/routes", {**RANGE, "search": "PRODUCT"}).json()
    assert [row["route"] for row in found["results"]] == ["/products/:id"]
    floored = viewer_client.get("/api/v1/sites/shop/routes", {**RANGE, "min_samples": 10_000}).json()
    assert floored["count"] == by_lcp["count"]
    assert all(row["too_few_samples"] for row in floored["results"])


def test_series_histogram_and_breakdown(viewer_client: Client, stored: list[dict[str, Any]]) -> None:
    series = viewer_client.get("/api/v1/sites/shop/series", {**RANGE, "name": "LCP", "p": 90}).json()
    assert (series["name"], series["percentile"], series["resolution"]) == ("LCP", 90, 3600)
    assert (series["good_threshold"], series["poor_threshold"]) == (2500, 4000)
    assert len(series["points"]) == 48
    recent = [r for r in stored if r["name"] == "LCP" and r["occurred_at"] >= NOW - timedelta(days=2)]
    assert sum(p["samples"] for p in series["points"]) == len(recent)
    histogram = viewer_client.get("/api/v1/sites/shop/histogram", {**RANGE, "name": "LCP"}).json()
    assert sum(b["weight"] for b in histogram["bins"]) == pytest.approx(sum(r["weight"] for r in recent))
    assert all(b["low"] <= b["high"] for b in histogram["bins"])
    breakdown = viewer_client.get("/api/v1/sites/shop/breakdown", {**RANGE, "name": "LCP", "dimension": "device_class"})
    rows = breakdown.json()["rows"]
    assert {row["value"] for row in rows} == {r["device_class"] for r in recent}
    assert sum(row["samples"] for row in rows) == len(recent)


def test_attribution_ranks_culprits_by_impact(viewer_client: Client, site: Site) -> None:
    # Ten page views of the logo, each 100 ms over "good"; two of the hero,
    # 2000 ms over: the hero explains more of the trouble and comes first.
    at = NOW - timedelta(hours=2)
    hero = {"target": "main > img.hero", "url": "https://cdn.example.com/hero.jpg", "resourceLoadDelay": 300.0}
    logo = {"target": "header > img.logo", "url": "https://cdn.example.com/logo.svg", "resourceLoadDelay": 50.0}
    store(
        [raw_record(site, n, name="LCP", value=2600.0, at=at, attribution=logo) for n in range(10)]
        + [raw_record(site, 100 + n, name="LCP", value=4500.0, at=at, attribution=hero) for n in range(2)]
    )
    answer = viewer_client.get("/api/v1/sites/shop/attribution", {**RANGE, "name": "LCP"}).json()
    assert answer["name"] == "LCP"
    assert answer["note"]
    elements = [row for row in answer["rows"] if row["kind"] == "element"]
    assert [row["key"] for row in elements] == ["main > img.hero", "header > img.logo"]
    assert (elements[0]["samples"], elements[0]["impact"]) == (2, pytest.approx(4000.0))
    assert (elements[1]["samples"], elements[1]["impact"]) == (10, pytest.approx(1000.0))
    phases = {p["phase"]: p["mean"] for p in elements[0]["phases"]}
    assert phases["resourceLoadDelay"] == pytest.approx(300.0)
    assert phases["timeToFirstByte"] is None
    assert {row["kind"] for row in answer["rows"]} == {"element", "resource"}
    one = viewer_client.get("/api/v1/sites/shop/attribution", {**RANGE, "name": "LCP", "limit": 1}).json()
    assert [row["key"] for row in one["rows"] if row["kind"] == "element"] == ["main > img.hero"]


def test_compare_two_releases(viewer_client: Client, stored: list[dict[str, Any]]) -> None:
    answer = viewer_client.get(
        "/api/v1/sites/shop/compare",
        {**RANGE, "mode": "releases", "a_release": "2026.11.1", "b_release": "2026.11.2", "by_route": "false"},
    ).json()
    assert answer["method"] == COMPARE_METHOD
    assert (answer["a_label"], answer["b_label"]) == ("2026.11.1", "2026.11.2")
    assert [row["name"] for row in answer["rows"]] == list(METRIC_ORDER)
    recent = [r for r in stored if r["name"] == "LCP" and r["occurred_at"] >= NOW - timedelta(days=2)]
    lcp = answer["rows"][0]
    assert lcp["a"]["samples"] == sum(1 for r in recent if r["release"] == "2026.11.1")
    assert lcp["b"]["samples"] == sum(1 for r in recent if r["release"] == "2026.11.2")
    assert lcp["a"]["low"] <= lcp["a"]["value"] <= lcp["a"]["high"]
    assert isinstance(lcp["beyond_noise"], bool)


def test_compare_two_periods(viewer_client: Client, stored: list[dict[str, Any]]) -> None:
    previous = viewer_client.get("/api/v1/sites/shop/compare", RANGE).json()
    assert previous["mode"] == "periods"
    assert previous["a_range"]["start"] == "2026-11-23T12:00:00Z"
    assert previous["a_range"]["end"] == previous["b_range"]["start"] == "2026-11-25T12:00:00Z"
    assert any(row["route"] is not None for row in previous["rows"])
    bounds = {
        "a_start": (NOW - timedelta(days=4)).isoformat(),
        "a_end": (NOW - timedelta(days=3)).isoformat(),
        "b_start": (NOW - timedelta(days=1)).isoformat(),
        "b_end": NOW.isoformat(),
    }
    explicit = viewer_client.get("/api/v1/sites/shop/compare", {**bounds, "by_route": "false"}).json()
    assert explicit["a_range"]["start"] == "2026-11-23T12:00:00Z"
    assert explicit["b_range"]["start"] == "2026-11-26T12:00:00Z"
    day_one = sum(
        1
        for r in stored
        if r["name"] == "CLS" and NOW - timedelta(days=4) <= r["occurred_at"] < NOW - timedelta(days=3)
    )
    assert explicit["rows"][2]["name"] == "CLS"
    assert explicit["rows"][2]["a"]["samples"] == day_one


# --- Queries --------------------------------------------------------------------

# The signed-in user (the session itself comes from the cache, SESSION_ENGINE
# cached_db) and the site come before the selector's queries.
QUERIES = [
    ("summary", {}, 4),  # vitals_summary: the range by bucket, the previous period
    ("routes", {}, 3),  # route_table
    ("series", {"name": "LCP"}, 4),  # metric_series: buckets, release markers
    ("histogram", {"name": "LCP"}, 3),
    ("breakdown", {"name": "LCP", "dimension": "country"}, 3),
    ("attribution", {"name": "INP"}, 3),  # attribution_top
    ("compare", {}, 6),  # vitals_compare: each side overall and per route
    ("compare", {"by_route": "false"}, 4),
    ("export", {"kind": "routes"}, 3),
    ("export", {"kind": "series", "name": "TTFB"}, 4),
    ("export", {"kind": "raw"}, 4),  # the page's boundary, then the rows
]


@pytest.mark.parametrize(("endpoint", "params", "count"), QUERIES)
def test_query_count(
    viewer_client: Client,
    stored: list[dict[str, Any]],
    django_assert_num_queries: DjangoAssertNumQueries,
    endpoint: str,
    params: dict[str, str],
    count: int,
) -> None:
    with django_assert_num_queries(count):
        response = viewer_client.get(f"/api/v1/sites/shop/{endpoint}", {**RANGE, **params})
        assert body(response)
    assert response.status_code == 200


def test_the_sites_list_query_count(
    viewer_client: Client, site: Site, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    for n in range(5):
        Site.objects.create(name=f"site-{n}")
    # user, count, page
    with django_assert_num_queries(3):
        assert viewer_client.get("/api/v1/sites/").status_code == 200


@pytest.mark.parametrize(("endpoint", "params"), SITE_ENDPOINTS)
def test_only_the_raw_export_reads_raw_rows(
    viewer_client: Client, stored: list[dict[str, Any]], endpoint: str, params: dict[str, str]
) -> None:
    with CaptureQueriesContext(connection) as queries:
        body(viewer_client.get(f"/api/v1/sites/shop/{endpoint}", {**RANGE, **params}))
    sql = " ".join(q["sql"] for q in queries.captured_queries)
    # Rollup, DimensionRollup or AttributionRollup rows; never vitals_metric.
    assert re.search(r"\bvitals_\w*rollup\b", sql)
    assert "vitals_metric" not in sql
    with CaptureQueriesContext(connection) as queries:
        body(viewer_client.get("/api/v1/sites/shop/export", {**RANGE, "kind": "raw"}))
    assert any("vitals_metric" in q["sql"] for q in queries.captured_queries)
