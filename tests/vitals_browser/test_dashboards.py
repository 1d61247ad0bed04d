"""The Web Vitals dashboards in headless Chromium, under the strict CSP:
log in, open the overview, change the percentile, the range and a filter,
sort the routes, open a route, its attribution and a metric's chart, and watch beacons posted
meanwhile appear without a reload, the unchanged polls answered 304 and not
swapped.

The cards are compared with the JSON API's answer to the same question,
fetched with the browser's session; the routes table with the selectors'
results, which the API serves too."""

import http.client
import json
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import User
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.http import QueryDict
from django.utils import timezone
from playwright.sync_api import Page, Response, expect
from pytest_django.live_server_helper import LiveServer

from apps.vitals.filters import dashboard_query_parse
from apps.vitals.models import Site
from apps.vitals.selectors import attribution_top, beacons_last_minute, route_table, vitals_summary
from apps.vitals.services import metrics_store, site_create
from apps.vitals.templatetags.vitals_format import vital_number
from tests.browser_support import CHROMIUM, CHROMIUM_ARGS, CSP_LISTENER, playwright_running, record_console_errors
from tests.helpers import PASSWORD, require
from tests.vitals.helpers import CHROME_DESKTOP, ORIGIN, beacon, drain, lcp, metric_id
from tests.vitals.test_pages import pageviews
from tests.vitals.test_store import record

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# live.js polls every 5 s while the user is active; a poll's answer has
# this long to show.
POLL_WAIT_MS = 20_000


class _WhiteNoise(StaticFilesHandler):
    """Static files through WhiteNoise under their hashed names, as in production."""

    def _should_handle(self, path: str) -> bool:
        return False


@pytest.fixture(scope="module")
def live_server() -> Iterator[LiveServer]:
    server = LiveServer("localhost", start=False)
    server.thread.static_handler = _WhiteNoise
    server.start()
    yield server
    server.stop()


@pytest.fixture
def orm_beside_playwright(monkeypatch: pytest.MonkeyPatch) -> None:
    # Playwright's sync API runs an asyncio loop in this thread, and Django
    # refuses ORM calls while one runs; the test's ORM calls (the expected
    # figures, draining the stream) are plain blocking calls between
    # browser steps, as in tests/browser/conftest.py.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def acme() -> Site:
    site = site_create(name="acme", allowed_origins=["*"])
    now = timezone.now()
    recent = now - timedelta(minutes=5)
    hero = {"target": "main > img.hero", "url": "https://cdn.example.com/hero.jpg", "resourceLoadDuration": 2200.0}
    logo = {"target": "header > img.logo", "url": "https://cdn.example.com/logo.png", "resourceLoadDuration": 90.0}
    batch = [
        *(
            record(site, 9000 + n, name="LCP", value=5200.0, attribution=hero, route="/products/:id", at=recent)
            for n in range(4)
        ),
        *(
            record(site, 9100 + n, name="LCP", value=2700.0, attribution=logo, route="/products/:id", at=recent)
            for n in range(12)
        ),
        *pageviews(site, route="/", views=30, at=recent, first=0, device_class="desktop"),
        *pageviews(site, route="/products/:id", views=40, at=recent, first=1000, factor=2.5, device_class="mobile"),
        *pageviews(site, route="/cart", views=25, at=recent, first=2000, factor=1.5, device_class="mobile"),
    ]
    metrics_store(records=batch, now=now)
    return site


def expected(site: Site, page: Page) -> Any:
    """The selectors' summary for the question in the page's URL."""
    return vitals_summary(dashboard_query_parse(QueryDict(urlsplit(page.url).query), site=site))


def shown(page: Page, name: str) -> str:
    return page.locator(f'article[data-metric="{name}"] .vital-number').inner_text()


def assert_cards_match(page: Page, site: Site) -> None:
    """The cards show what the JSON API answers for the same question, asked
    with the browser's own session."""
    answer = page.request.get(f"/api/v1/sites/{site.name}/summary?{urlsplit(page.url).query}")
    assert answer.status == 200, answer.text()
    cards = answer.json()["cards"]
    assert [card["name"] for card in cards] == [card.name for card in expected(site, page).cards]
    for card in cards:
        assert shown(page, card["name"]) == vital_number(card["value"], card["name"]), card["name"]
        samples = page.locator(f'article[data-metric="{card["name"]}"] .samples').inner_text()
        assert samples == f"{card['samples']:,}"


def apply_filters(page: Page) -> None:
    with page.expect_navigation():
        page.get_by_role("button", name="Apply").click()


def post_beacon(live_server: LiveServer, site: Site, n: int) -> None:
    """A page view's LCP, as a browser on the site sends it."""
    body = json.dumps(beacon(lcp(1800.0 + n, n=n, id=metric_id(n)), pageview=f"live-{n}"))
    connection = http.client.HTTPConnection(live_server.thread.host, live_server.thread.port, timeout=10)
    try:
        connection.request(
            "POST",
            f"/api/v1/vitals/collect?key={site.public_key}",
            body=body,
            headers={"Content-Type": "text/plain", "Origin": ORIGIN, "User-Agent": CHROME_DESKTOP},
        )
        response = connection.getresponse()
        assert (response.status, json.loads(response.read())["accepted"]) == (202, 1)
    finally:
        connection.close()


def test_dashboards_follow_the_question_and_refresh_live(
    live_server: LiveServer, viewer: User, acme: Site, orm_beside_playwright: None
) -> None:
    require(CHROMIUM.exists(), f"{CHROMIUM} is not installed (apt-get install chromium)")
    errors: list[str] = []
    polls: list[tuple[int, str]] = []
    with playwright_running() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
            context.add_init_script(CSP_LISTENER)
            page = context.new_page()
            record_console_errors(page, errors)

            def on_response(response: Response) -> None:
                target = response.request.headers.get("hx-target")
                if target:
                    polls.append((response.status, target))

            page.on("response", on_response)

            page.goto("/login/?next=/vitals/")
            page.get_by_label("Username").fill(viewer.get_username())
            page.get_by_label("Password").fill(PASSWORD)
            with page.expect_navigation():
                page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("heading", level=1, name="Web Vitals of acme")).to_be_visible()
            assert urlsplit(page.url).path == "/vitals/s/acme/"
            assert_cards_match(page, acme)

            # The percentile, the range and a filter, through the filter bar.
            page.get_by_label("Percentile").select_option("90")
            apply_filters(page)
            assert "p=90" in page.url
            expect(page.locator('article[data-metric="LCP"] .card-rating')).to_contain_text("at p90")
            assert_cards_match(page, acme)

            page.get_by_label("Range").select_option("7d")
            apply_filters(page)
            assert "range=7d" in page.url
            assert_cards_match(page, acme)

            page.get_by_label("Device").select_option("mobile")
            apply_filters(page)
            assert "device_class=mobile" in page.url
            assert_cards_match(page, acme)
            assert expected(acme, page).cards[0].samples == 65

            # Sorting the routes table swaps the table alone (htmx) and keeps the URL in step.
            page.evaluate("window.perfhubNoReload = true")
            table = page.locator("table.routes-table")
            table.get_by_role("link", name="Route").click()
            expect(page).to_have_url(re.compile(r"sort=route"))
            expect(table.locator("tbody th[scope=row] a")).to_have_text(["/cart", "/products/:id"])
            assert page.evaluate("window.perfhubNoReload") is True
            query = dashboard_query_parse(QueryDict(urlsplit(page.url).query), site=acme)
            rows = route_table(query, sort="route")
            for row, cell in zip(rows, table.locator("tbody tr td[data-metric=LCP]").all(), strict=True):
                assert cell.inner_text().startswith(vital_number(row.metrics["LCP"].value, "LCP"))

            # A route's own page.
            with page.expect_navigation():
                table.get_by_role("link", name="/products/:id").click()
            expect(page.get_by_role("heading", level=1)).to_have_text("Route /products/:id")
            assert_cards_match(page, acme)

            # The route's attribution: the culprits ranked by impact.
            with page.expect_navigation():
                page.get_by_role("link", name="What slows this route down (attribution)").click()
            expect(page.get_by_role("heading", level=1)).to_have_text("Attribution for /products/:id")
            query = dashboard_query_parse(QueryDict(urlsplit(page.url).query), site=acme)
            elements = [r for r in attribution_top(query, name="LCP") if r.kind == "element"]
            assert [r.key for r in elements] == ["main > img.hero", "header > img.logo"]
            table = page.locator('table[data-metric="LCP"][data-kind="element"]')
            expect(table.locator("tbody th[scope=row]")).to_have_text([r.key for r in elements])
            first_row = table.locator("tbody tr").first
            expect(first_row.locator("td").nth(0)).to_have_text(vital_number(elements[0].impact, "LCP"))
            expect(first_row.locator("td").nth(1)).to_have_text(f"{elements[0].weight:,.0f}")

            # A metric's chart, drawn by live.js with uPlot under the CSP.
            with page.expect_navigation():
                page.get_by_role("navigation", name="Web Vitals views").get_by_role("link", name="LCP").click()
            page.wait_for_selector("#series-chart[data-chart-ready=true] canvas")
            expect(page.get_by_role("heading", name="By device")).to_be_visible()

            # Live: back on the overview, with the tab visible.
            page.goto("/vitals/s/acme/")
            polls.clear()
            page.evaluate("window.perfhubNoReload = true")
            counter = page.locator("#vitals-cards .beacons-last-minute")
            assert counter.inner_text() == "0"
            # The first poll learns the fragment's ETag and swaps it in; the
            # next ones are answered 304 and leave the element as it is
            # (htmx 2.0.11 alone would swap the empty 304 in: live.js stops it).
            page.evaluate("document.getElementById('vitals-cards').dataset.first = 'yes'")
            page.wait_for_function("() => !document.getElementById('vitals-cards').dataset.first", timeout=POLL_WAIT_MS)
            assert (200, "vitals-cards") in polls, polls
            page.evaluate("document.getElementById('vitals-cards').dataset.seen = 'yes'")
            deadline = time.monotonic() + POLL_WAIT_MS / 1000
            while (304, "vitals-cards") not in polls and time.monotonic() < deadline:
                page.wait_for_timeout(250)
            assert (304, "vitals-cards") in polls, polls
            page.wait_for_timeout(500)
            assert page.evaluate("document.getElementById('vitals-cards').dataset.seen") == "yes", polls
            assert page.locator("article.vital-card").count() == 5

            before = vitals_summary(dashboard_query_parse(QueryDict(""), site=acme)).cards[0].samples
            for n in range(3):
                post_beacon(live_server, acme, 500 + n)
            # On PostgreSQL + Redis the endpoint appended to the stream; the
            # worker's consumer stores them.
            drain()
            assert beacons_last_minute(acme) == 3
            expect(counter).to_have_text("3", timeout=POLL_WAIT_MS)
            expect(page.locator('article[data-metric="LCP"] .samples')).to_have_text(f"{before + 3:,}")
            assert page.evaluate("window.perfhubNoReload") is True
            assert_cards_match(page, acme)
            # Leave the dashboard, so that no poll is still being answered
            # (holding a database connection) when the test database goes.
            page.goto("about:blank")
            context.close()
        finally:
            browser.close()
    assert errors == []
