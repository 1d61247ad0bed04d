"""The Web Vitals dashboards (/vitals/s/<site>/…): what they show, that it
is what the selectors compute, bad questions, permissions, the live
fragments' ETag / 304, and the queries each page makes."""

import re
from datetime import datetime, timedelta
from html import unescape
from typing import Any

import pytest
from django.http import QueryDict
from django.test import Client
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from pytest_django.fixtures import DjangoAssertNumQueries

from apps.vitals.filters import dashboard_query_parse
from apps.vitals.models import BUILTIN_SITE, Site
from apps.vitals.selectors import (
    COMPARE_METHOD,
    METRIC_ORDER,
    SCORE_WEIGHTS,
    metric_breakdown,
    metric_histogram,
    route_table,
    vitals_summary,
)
from apps.vitals.services import metrics_store, site_create
from apps.vitals.templatetags.vitals_format import count, vital_value
from tests.vitals.test_store import record

pytestmark = pytest.mark.django_db

DASHBOARDS = ["/vitals/s/shop/", "/vitals/s/shop/metric/LCP/", "/vitals/s/shop/compare/", "/vitals/s/shop/attribution/"]

# One value per metric and page view, scaled per route so that routes differ.
BASE = {"LCP": 1000.0, "INP": 80.0, "CLS": 0.02, "FCP": 800.0, "TTFB": 300.0}
STEP = {"LCP": 100.0, "INP": 10.0, "CLS": 0.005, "FCP": 40.0, "TTFB": 20.0}


def pageviews(
    site: Site, *, route: str, views: int, at: datetime, first: int, factor: float = 1.0, **dims: Any
) -> list[dict[str, Any]]:
    rows = []
    for i in range(views):
        for j, name in enumerate(METRIC_ORDER):
            n = first + i * len(METRIC_ORDER) + j
            value = (BASE[name] + STEP[name] * i) * factor
            rows.append(record(site, n, name=name, value=value, at=at - timedelta(seconds=i), route=route, **dims))
    return rows


@pytest.fixture
def now() -> datetime:
    return timezone.now()


@pytest.fixture
def shop(now: datetime) -> Site:
    """Three routes in the last hour: "/" on desktop (release r1), slower
    "/products/:id" on mobile (release r2), and "/rare" under the sample
    floor; and "/" a day earlier, for the change against the previous period."""
    site = site_create(name="shop", allowed_origins=["*"])
    recent = now - timedelta(minutes=5)
    batch = [
        *pageviews(site, route="/", views=30, at=recent, first=0, device_class="desktop", release="r1"),
        *pageviews(
            site,
            route="/products/:id",
            views=40,
            at=recent,
            first=1000,
            factor=2.5,
            device_class="mobile",
            release="r2",
            country="DE",
        ),
        *pageviews(site, route="/rare", views=3, at=recent, first=2000, factor=4, release="r2"),
        *pageviews(site, route="/", views=20, at=now - timedelta(hours=30), first=3000, factor=0.8, release="r1"),
    ]
    metrics_store(records=batch, now=now)
    return site


def dashboard(site: Site, query: str = "") -> str:
    return f"/vitals/s/{site.name}/" + (f"?{query}" if query else "")


def question(site: Site, query: str = "") -> Any:
    return dashboard_query_parse(QueryDict(query), site=site)


def text(html: bytes) -> str:
    """The page's text, tags dropped and whitespace collapsed."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html.decode()))).strip()


def card(page: bytes, name: str) -> str:
    match = re.search(
        rf'<article class="card vital-card[^"]*" data-metric="{name}">(.*?)</article>', page.decode(), re.S
    )
    assert match, name
    return text(match.group(1).encode())


# --- Access ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/vitals/", *DASHBOARDS])
def test_anonymous_visitors_are_sent_to_log_in(client: Client, shop: Site, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


@pytest.mark.parametrize("path", ["/vitals/", *DASHBOARDS])
def test_signed_in_non_staff_users_get_403(outsider_client: Client, shop: Site, path: str) -> None:
    assert outsider_client.get(path).status_code == 403


@pytest.mark.parametrize("path", DASHBOARDS)
def test_staff_read_every_dashboard_with_the_rum_snippet(viewer_client: Client, shop: Site, path: str) -> None:
    response = viewer_client.get(path)
    assert response.status_code == 200
    page = response.content.decode()
    builtin = Site.objects.get(name=BUILTIN_SITE)
    assert f'data-perfhub-key="{builtin.public_key}"' in page
    # No inline script or style: the strict CSP holds.
    assert re.search(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", page) is None
    assert " style=" not in page and "<style" not in page


def test_unknown_sites_and_metrics_are_404(viewer_client: Client, shop: Site) -> None:
    assert viewer_client.get("/vitals/s/nope/").status_code == 404
    assert viewer_client.get("/vitals/s/shop/metric/XYZ/").status_code == 404
    assert viewer_client.get("/vitals/?site=nope").status_code == 404


# --- The site chooser ---------------------------------------------------------


def test_vitals_overview_opens_the_first_site_with_data(viewer_client: Client, shop: Site) -> None:
    site_create(name="aaa-empty", allowed_origins=["*"])
    response = viewer_client.get("/vitals/")
    assert (response.status_code, response["Location"]) == (302, "/vitals/s/shop/")


def test_without_data_the_builtin_site_opens(viewer_client: Client) -> None:
    site_create(name="aaa-empty", allowed_origins=["*"])
    response = viewer_client.get("/vitals/")
    assert (response.status_code, response["Location"]) == (302, f"/vitals/s/{BUILTIN_SITE}/")


def test_the_chooser_keeps_the_question(viewer_client: Client, shop: Site) -> None:
    response = viewer_client.get("/vitals/?site=shop&p=90&range=7d")
    assert (response.status_code, response["Location"]) == (302, "/vitals/s/shop/?p=90&range=7d")
    page = viewer_client.get(dashboard(shop)).content.decode()
    assert '<option value="shop" selected>shop</option>' in page
    assert '<form class="site-chooser" method="get" action="/vitals/">' in page


# --- The overview ---------------------------------------------------------------


def test_cards_show_the_selectors_figures(viewer_client: Client, shop: Site) -> None:
    response = viewer_client.get(dashboard(shop))
    assert response.status_code == 200
    summary = vitals_summary(question(shop))
    for c in summary.cards:
        shown = card(response.content, c.name)
        assert vital_value(c.value, c.name) in shown
        assert f"{count(c.samples)} samples" in shown
        assert c.samples == 73
        # The rating in words and a symbol, not only as a colour.
        label = {"good": "Good", "needs-improvement": "Needs improvement", "poor": "Poor"}[c.rating or ""]
        assert label in shown
        assert f"{c.good_share * 100:.0f}% good" in shown
        assert c.change is not None
        assert f"{abs(c.change) * 100:.1f}% vs previous period" in shown
        assert ("worse" if c.change > 0 else "better") in shown
    page = text(response.content)
    assert f"Performance score {summary.score:.0f} / 100" in page
    assessment = "✓ Passed" if summary.core_web_vitals_pass else "✕ Failed"
    assert f"Core Web Vitals assessment {assessment}" in page
    # The score's method and weights are on the page.
    for name, weight in SCORE_WEIGHTS.items():
        assert f"{name} {weight * 100:.0f}%" in page
    assert "log-normal curve" in page
    # Sparklines and split bars are SVG, with their figures in text.
    assert response.content.decode().count('<svg class="sparkline"') == len(METRIC_ORDER)
    assert 'class="split-bar"' in response.content.decode()


def test_the_percentile_range_and_filters_change_the_figures(viewer_client: Client, shop: Site) -> None:
    query = "p=95&range=7d&device_class=mobile"
    response = viewer_client.get(dashboard(shop, query))
    assert response.status_code == 200
    mobile = vitals_summary(question(shop, query)).cards[0]
    everyone = vitals_summary(question(shop)).cards[0]
    assert mobile.value != everyone.value
    shown = card(response.content, "LCP")
    assert vital_value(mobile.value, "LCP") in shown
    assert "at p95" in shown
    assert f"{count(mobile.samples)} samples" in shown and mobile.samples == 40
    page = response.content.decode()
    assert '<option value="95" selected>p95</option>' in page
    assert '<option value="7d" selected>Last 7 days</option>' in page
    assert '<option value="mobile" selected>mobile</option>' in page


def test_routes_table_is_worst_first_with_rare_routes_greyed_last(viewer_client: Client, shop: Site) -> None:
    page = viewer_client.get(dashboard(shop)).content.decode()
    table = page[page.index('<table class="data routes-table">') : page.index("</table>")]
    routes = re.findall(r'<th scope="row"><a href="[^"]*">([^<]+)</a>', table)
    assert routes == ["/products/:id", "/", "/rare"]
    assert '<tr class="muted too-few">' in table
    assert table.count("too few samples") == 1
    headers = re.findall(r'<th scope="col"[^>]*>\s*<a href="([^"]+)" hx-get="([^"]+)"', table)
    assert len(headers) == 2 + len(METRIC_ORDER) + 1
    assert all(href == hx for href, hx in headers)
    rows = {row.route: row for row in route_table(question(shop))}
    assert vital_value(rows["/"].metrics["LCP"].value, "LCP") in table


def test_routes_sort_search_and_pagination(viewer_client: Client, shop: Site) -> None:
    page = viewer_client.get(dashboard(shop, "sort=route&dir=asc&range=7d")).content.decode()
    routes = re.findall(r'<th scope="row"><a href="[^"]*">([^<]+)</a>', page)
    assert routes == ["/", "/products/:id", "/rare"]
    assert 'aria-sort="ascending"' in page
    # The header of the column sorted on reverses it, keeping the other parameters.
    assert 'href="?sort=route&amp;dir=desc&amp;range=7d"' in page

    page = viewer_client.get(dashboard(shop, "q=PROD")).content.decode()
    assert re.findall(r'<th scope="row"><a href="[^"]*">([^<]+)</a>', page) == ["/products/:id"]
    assert 'value="PROD"' in page


def test_routes_paginate_keeping_the_question(viewer_client: Client, shop: Site, now: datetime) -> None:
    many = [
        row
        for k in range(30)
        for row in pageviews(shop, route=f"/r{k:02d}", views=1, at=now - timedelta(minutes=3), first=10_000 + 10 * k)
    ]
    metrics_store(records=many, now=now)
    page = viewer_client.get(dashboard(shop, "p=90&sort=route&dir=asc")).content.decode()
    assert "Page 1 of 2" in page
    assert 'href="?p=90&amp;sort=route&amp;dir=asc&amp;page=2"' in page
    second = viewer_client.get(dashboard(shop, "p=90&sort=route&dir=asc&page=2")).content.decode()
    assert "Page 2 of 2" in second
    assert "/rare" in second


def test_a_route_page_shows_that_routes_figures(viewer_client: Client, shop: Site) -> None:
    response = viewer_client.get(dashboard(shop, "route=/products/:id"))
    assert response.status_code == 200
    lcp = vitals_summary(question(shop, "route=/products/:id")).cards[0]
    assert vital_value(lcp.value, "LCP") in card(response.content, "LCP")
    page = response.content.decode()
    assert "routes-table" not in page
    assert '<input type="hidden" name="route" value="/products/:id">' in page


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ("p=42", ["p"]),
        ("country=de", ["country"]),
        ("range=1y", ["range"]),
        ("range=custom&start=2026-11-20T00:00", ["start"]),
        ("start=2026-11-20T00:00&end=2026-11-10T00:00", ["end"]),
        ("p=1&device_class=fridge", ["p", "device_class"]),
    ],
)
def test_bad_questions_are_400_naming_the_fields(
    viewer_client: Client, shop: Site, query: str, fields: list[str]
) -> None:
    for path in (dashboard(shop, query), *(f"{page}?{query}" for page in DASHBOARDS[1:])):
        response = viewer_client.get(path)
        assert response.status_code == 400, path
        page = response.content.decode()
        assert "This question cannot be answered as asked." in page
        for field in fields:
            assert f"(<code>{field}</code>)" in page
    fragment = viewer_client.get(dashboard(shop, query), headers={"HX-Request": "true", "HX-Target": "vitals-cards"})
    assert fragment.status_code == 400
    assert "<html" not in fragment.content.decode()


def test_bad_compare_choices_are_400(viewer_client: Client, shop: Site) -> None:
    response = viewer_client.get("/vitals/s/shop/compare/?mode=sideways")
    assert response.status_code == 400
    assert "(<code>mode</code>)" in response.content.decode()


def test_export_links_follow_the_question_once_the_api_has_them(viewer_client: Client, shop: Site) -> None:
    try:
        export = reverse("api-site-export", args=["shop"])
    except NoReverseMatch:
        export = None
    page = viewer_client.get(dashboard(shop, "p=90&device_class=mobile&q=prod&sort=LCP&dir=asc")).content.decode()
    metric = viewer_client.get("/vitals/s/shop/metric/INP/?range=7d").content.decode()
    if export is None:
        # The API's export is not in this build: no link to a 404.
        assert "Export this" not in page and "Export this" not in metric
        return
    routes = f"{export}?p=90&amp;device_class=mobile&amp;search=prod&amp;sort=LCP&amp;order=asc&amp;kind=routes"
    assert f'href="{routes}&amp;format=csv" download>CSV</a>' in page
    assert f'href="{routes}&amp;format=json" download>JSON</a>' in page
    assert f'href="{export}?range=7d&amp;kind=series&amp;name=INP&amp;format=csv"' in metric
    assert f'href="{export}?range=7d&amp;kind=raw&amp;name=INP&amp;format=ndjson"' in metric


# --- Live fragments -----------------------------------------------------------------


@pytest.mark.parametrize("target", ["vitals-cards", "routes"])
def test_fragments_carry_an_etag_and_answer_304_until_data_changes(
    viewer_client: Client, shop: Site, now: datetime, target: str
) -> None:
    first = viewer_client.get(dashboard(shop), headers={"HX-Request": "true", "HX-Target": target})
    assert first.status_code == 200
    body = first.content.decode()
    assert "<html" not in body and f'id="{target}"' in body
    assert 'hx-trigger="perfhub:poll"' in body
    etag = first["ETag"]
    assert "no-cache" in first["Cache-Control"]
    assert "HX-Request" in first["Vary"]

    again = viewer_client.get(
        dashboard(shop), headers={"HX-Request": "true", "HX-Target": target, "If-None-Match": etag}
    )
    assert (again.status_code, again.content, again["ETag"]) == (304, b"", etag)

    metrics_store(records=pageviews(shop, route="/new", views=1, at=now - timedelta(minutes=1), first=90_000), now=now)
    changed = viewer_client.get(
        dashboard(shop), headers={"HX-Request": "true", "HX-Target": target, "If-None-Match": etag}
    )
    assert changed.status_code == 200
    assert changed["ETag"] != etag


def test_beacons_last_minute_counter(viewer_client: Client, shop: Site, now: datetime) -> None:
    metrics_store(records=pageviews(shop, route="/live", views=2, at=timezone.now(), first=80_000), now=now)
    body = viewer_client.get(
        dashboard(shop), headers={"HX-Request": "true", "HX-Target": "vitals-cards"}
    ).content.decode()
    assert re.search(r'<strong class="beacons-last-minute">10</strong> metrics from beacons in the last minute', body)


def test_dashboard_pages_load_live_js_and_no_inline_handlers(viewer_client: Client, shop: Site) -> None:
    page = viewer_client.get(dashboard(shop)).content.decode()
    assert re.search(r'<script src="/static/perfhub/live\.[0-9a-f]{12}\.js" defer></script>', page)
    assert re.search(r'<link rel="stylesheet" href="/static/perfhub/vitals\.[0-9a-f]{12}\.css">', page)
    assert " onclick=" not in page and "javascript:" not in page


# --- Metric detail -------------------------------------------------------------------


def test_metric_page_has_the_series_histogram_and_breakdowns(viewer_client: Client, shop: Site) -> None:
    response = viewer_client.get("/vitals/s/shop/metric/LCP/?p=90")
    assert response.status_code == 200
    page = response.content.decode()
    data = re.search(r'<script id="series-data" type="application/json">(.*?)</script>', page, re.S)
    assert data is not None
    assert '"percentile": 90' in data.group(1) and '"good": 2500' in data.group(1)
    assert '"r1"' in data.group(1) and '"r2"' in data.group(1)
    assert 'data-chart-source="series-data"' in page
    assert re.search(r'<script src="/static/vendor/uplot/uPlot-1\.6\.32\.iife\.min\.[0-9a-f]{12}\.js" defer>', page)
    query = question(shop, "p=90")
    bins = metric_histogram(query, name="LCP")
    assert page.count('<rect class="fill-') == len(bins) > 0
    for dimension in ("device_class", "browser", "country", "connection", "navigation_type", "release"):
        rows = metric_breakdown(query, name="LCP", dimension=dimension)
        assert rows
        for row in rows:
            assert f'<td class="num">{vital_value(row.percentile_value, "LCP")}</td>' in page
            assert f'<td class="num">{count(row.samples)}</td>' in page
    # A breakdown value narrows the page to it.
    assert 'href="?p=90&amp;device_class=mobile"' in page


def test_metric_page_for_one_route(viewer_client: Client, shop: Site) -> None:
    page = viewer_client.get("/vitals/s/shop/metric/CLS/?route=/rare").content.decode()
    assert "on <code>/rare</code>" in page
    rows = metric_breakdown(question(shop, "route=/rare"), name="CLS", dimension="device_class")
    assert [r.samples for r in rows] == [3]


# --- Compare ---------------------------------------------------------------------------


def test_compare_two_releases(viewer_client: Client, shop: Site) -> None:
    response = viewer_client.get("/vitals/s/shop/compare/?mode=releases&a=r1&b=r2")
    assert response.status_code == 200
    page = response.content.decode()
    assert COMPARE_METHOD in unescape(page)
    assert "Release <code>r1</code> (A) against <code>r2</code> (B)" in page
    overall = re.search(r'<tr class="overall">\s*<th scope="row">LCP</th>(.*?)</tr>', page, re.S)
    assert overall is not None
    cells = re.findall(r'<td class="num[^"]*">(.*?)</td>', overall.group(1), re.S)
    # Samples: r1 has 30 page views, r2 43, in the last 24 hours.
    assert (cells[2], cells[5]) == ("30", "43")
    assert "Beyond noise: worse" in page
    assert '<option value="r2" selected>r2</option>' in page


def test_compare_defaults_to_the_previous_period(viewer_client: Client, shop: Site) -> None:
    page = viewer_client.get("/vitals/s/shop/compare/").content.decode()
    assert "Previous period (" in page
    overall = re.search(r'<tr class="overall">\s*<th scope="row">INP</th>(.*?)</tr>', page, re.S)
    assert overall is not None
    cells = re.findall(r'<td class="num[^"]*">(.*?)</td>', overall.group(1), re.S)
    assert (cells[2], cells[5]) == ("20", "73")


# --- Attribution -------------------------------------------------------------------------


@pytest.fixture
def blamed(shop: Site, now: datetime) -> Site:
    """LCP, INP, CLS and TTFB metrics with attribution on "/products/:id"."""
    at = now - timedelta(minutes=4)
    hero = {"target": "main > img.hero", "url": "https://cdn.example.com/hero.jpg", "timeToFirstByte": 400.0}
    hero |= {"resourceLoadDelay": 300.0, "resourceLoadDuration": 2200.0, "elementRenderDelay": 100.0}
    logo = {"target": "header > img.logo", "url": "https://cdn.example.com/logo.png", "resourceLoadDelay": 50.0}
    click = {"interactionTarget": "#add-to-cart", "inputDelay": 20.0, "processingDuration": 300.0}
    click |= {"presentationDelay": 40.0, "longestScriptURL": "https://shop.example.com/cart.js"}
    click |= {"longestScriptDuration": 280.0}
    timing = {"serverTiming": {"db": 12.5, "cache": 0.5, "app": 30.0}}
    records = [
        record(shop, 50_000 + n, name="LCP", value=5000.0, attribution=hero, route="/products/:id", at=at)
        for n in range(3)
    ]
    records += [
        record(shop, 50_100 + n, name="LCP", value=2600.0, attribution=logo, route="/products/:id", at=at)
        for n in range(10)
    ]
    records += [
        record(shop, 50_200 + n, name="INP", value=360.0, attribution=click, route="/products/:id", at=at)
        for n in range(4)
    ]
    records += [
        record(
            shop,
            50_300,
            name="CLS",
            value=0.3,
            attribution={"largestShiftTarget": "div.ad", "largestShiftValue": 0.3},
            route="/products/:id",
            at=at,
        ),
        record(shop, 50_400, name="TTFB", value=900.0, attribution=timing, route="/products/:id", at=at),
    ]
    metrics_store(records=records, now=now)
    return shop


def test_attribution_ranks_culprits_by_impact_with_their_phases(viewer_client: Client, blamed: Site) -> None:
    response = viewer_client.get("/vitals/s/shop/attribution/?route=/products/:id")
    assert response.status_code == 200
    page = response.content.decode()
    assert "Attribution for <code>/products/:id</code>" in page
    lcp_elements = re.search(r'data-metric="LCP" data-kind="element">(.*?)</table>', page, re.S)
    assert lcp_elements is not None
    keys = re.findall(r'<th scope="row"><code>([^<]+)</code></th>', lcp_elements.group(1))
    # Three page views 2500 ms over "good" outweigh ten 100 ms over.
    assert keys == ["main &gt; img.hero", "header &gt; img.logo"]
    hero = text(lcp_elements.group(1).encode())
    assert "7,500 3 3 5,000 ms" in hero
    assert "400 ms 300 ms 2,200 ms 100 ms" in hero
    assert 'aria-label="Share of each phase: TTFB 13%, Resource load delay 10%, Resource load duration 73%' in page
    inp = re.search(r'data-metric="INP" data-kind="target">(.*?)</table>', page, re.S)
    assert inp is not None and "#add-to-cart" in inp.group(1)
    assert "20 ms 300 ms 40 ms 280 ms" in text(inp.group(1).encode())
    script = re.search(r'data-metric="INP" data-kind="script">(.*?)</table>', page, re.S)
    assert script is not None and "https://shop.example.com/cart.js" in script.group(1)
    shift = re.search(r'data-metric="CLS" data-kind="shift">(.*?)</table>', page, re.S)
    assert shift is not None and "div.ad" in shift.group(1) and "0.300" in shift.group(1)
    server = re.search(r'data-metric="TTFB" data-kind="server">(.*?)</table>', page, re.S)
    assert server is not None
    assert "All page views" in server.group(1) and "12 ms 0 ms 30 ms" in text(server.group(1).encode())


def test_attribution_elsewhere_and_without_data(viewer_client: Client, blamed: Site) -> None:
    page = viewer_client.get("/vitals/s/shop/attribution/?route=/rare").content.decode()
    assert "No LCP attribution for this range and route." in page
    route_page = viewer_client.get("/vitals/s/shop/?route=/products/:id").content.decode()
    assert 'href="/vitals/s/shop/attribution/?route=%2Fproducts%2F%3Aid">What slows this route down' in route_page


# --- Queries: every page reads rollups only, a fixed number of times ---------------------


def test_query_counts(viewer_client: Client, shop: Site, django_assert_num_queries: DjangoAssertNumQueries) -> None:
    # The session and the snippet's site are cached from the first request
    # on; every request then reads its user (1), then its page's queries.
    viewer_client.get(dashboard(shop))
    # site; summary (2); beacons last minute; routes; the chooser's sites
    with django_assert_num_queries(1 + 6):
        assert viewer_client.get(dashboard(shop)).status_code == 200
    with django_assert_num_queries(1 + 4):  # site; summary (2); beacons last minute
        assert (
            viewer_client.get(dashboard(shop), headers={"HX-Request": "true", "HX-Target": "vitals-cards"}).status_code
            == 200
        )
    with django_assert_num_queries(1 + 2):  # site; routes
        assert (
            viewer_client.get(dashboard(shop), headers={"HX-Request": "true", "HX-Target": "routes"}).status_code == 200
        )
    # site; series (2); histogram; six breakdowns; the chooser's sites
    with django_assert_num_queries(1 + 11):
        assert viewer_client.get("/vitals/s/shop/metric/LCP/").status_code == 200
    # site; releases seen; compare (4); the chooser's sites
    with django_assert_num_queries(1 + 7):
        assert viewer_client.get("/vitals/s/shop/compare/?mode=releases").status_code == 200
    with django_assert_num_queries(1 + 7):
        assert viewer_client.get("/vitals/s/shop/compare/").status_code == 200
    # site; attribution of LCP, INP, CLS, FCP and TTFB; the chooser's sites
    with django_assert_num_queries(1 + 7):
        assert viewer_client.get("/vitals/s/shop/attribution/").status_code == 200
