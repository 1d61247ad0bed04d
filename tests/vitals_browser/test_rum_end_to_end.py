"""A page view in headless Chromium, from the snippet to PerfHub's tables.

Two origins on loopback, as in production: the monitored site (a threaded
http.server serving tests/vitals_browser/pages) and PerfHub itself, a live
server whose WhiteNoise serves the snippet under its hashed static names and
whose real collect endpoint stores what the page sends. The site's
allowed-origins check and CORS are on the path, as is, with REDIS_URL set,
the Redis stream that the worker drains into the database.
"""

import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from html import escape
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.http import HttpResponse, HttpResponseBase
from django.templatetags.static import static
from playwright.sync_api import Page
from pytest_django.live_server_helper import LiveServer

from apps.vitals.beacon import rating_for
from apps.vitals.models import Metric, Rating, Rollup, Site
from apps.vitals.services import site_create
from tests.browser_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    CSP_LISTENER,
    HERO_PNG,
    INTERACTION_REPORTED,
    assert_longest_script_if_attributed,
    playwright_running,
    record_console_errors,
)
from tests.helpers import require
from tests.vitals.helpers import CHROME_DESKTOP, drain

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PAGES = Path(__file__).resolve().parent / "pages"
COLLECT = "/api/v1/vitals/collect"
WEB_VITALS = "vendor/web-vitals/web-vitals-6.2.3.attribution.iife.js"
RUM = "perfhub/rum.js"
# Declared by product.html; its path (/pages/product.html) would give
# another route, so the stored one shows where it came from.
ROUTE = "/products/:id"
# Held back long enough for LCP to have a resource load to attribute.
HERO_DELAY = 0.3
# What the page's own backend reports; rum.js keeps PerfHub's names only.
SERVER_TIMING = "db;dur=12.5, cache;dur=0.4, app;dur=31, edge;dur=3"
NAMES = {"LCP", "INP", "CLS", "FCP", "TTFB"}
# After the first beacon, how long another one (there should be none) gets.
SETTLE_MS = 500

# shop.js inserts its banner 600 ms after it runs, moving the hero: the
# layout shift. It marks the page once the shift has been painted.
LOADED_AND_SHIFTED = "() => document.querySelector('.hero').complete && document.documentElement.dataset.shifted"


class PageServer:
    """The monitored site: tests/vitals_browser/pages on 127.0.0.1, under a
    strict Content-Security-Policy that lets in PerfHub's origin, with the
    snippet's placeholders filled in."""

    def __init__(self) -> None:
        self.placeholders: dict[str, str] = {}
        self.perfhub_origin = ""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.origin = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, name: str) -> str:
        return f"{self.origin}/pages/{name}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            # A stuck connection ends instead of holding a thread.
            timeout = 10

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                if path == "/favicon.ico":
                    # A 404 here would be a console error on every page.
                    self.send_response(HTTPStatus.NO_CONTENT)
                    self.end_headers()
                    return
                name = path.removeprefix("/pages/")
                if name == "hero.png":
                    time.sleep(HERO_DELAY)
                    self._send("image/png", HERO_PNG)
                    return
                file = PAGES / name
                if "/" in name or not name or not file.is_file():
                    self.send_error(HTTPStatus.NOT_FOUND)
                    return
                kind = {".html": "text/html", ".css": "text/css", ".js": "text/javascript"}[file.suffix]
                text = file.read_text()
                for placeholder, value in server.placeholders.items():
                    text = text.replace(placeholder, escape(value))
                self._send(f"{kind}; charset=utf-8", text.encode())

            def _send(self, content_type: str, data: bytes) -> None:
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                # Scripts, styles, images and connections only from the site
                # and PerfHub; no inline code, no eval.
                self.send_header("Content-Security-Policy", f"default-src 'self' {server.perfhub_origin}")
                self.send_header("Server-Timing", SERVER_TIMING)
                self.end_headers()
                self.wfile.write(data)

        return Handler


@dataclass(frozen=True)
class Exchange:
    """One request to PerfHub and its answer, as the live server saw them."""

    method: str
    path: str
    query: str
    origin: str
    user_agent: str
    content_type: str
    body: bytes
    status: int
    headers: dict[str, str]  # names lower-cased
    answer: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def answer_json(self) -> Any:
        return json.loads(self.answer)


class PerfHubLog:
    """Every request the live server answers, beacons included. Chromium
    sends the beacon of a pagehide after its document is gone, and Playwright
    reports no network event for it (on the page or on the context), so the
    answer is observed where PerfHub gives it."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._exchanges: list[Exchange] = []

    def record(self, exchange: Exchange) -> None:
        with self._changed:
            self._exchanges.append(exchange)
            self._changed.notify_all()

    def reset(self) -> None:
        with self._changed:
            self._exchanges.clear()

    def exchanges(self) -> list[Exchange]:
        with self._changed:
            return list(self._exchanges)

    def beacons(self) -> list[Exchange]:
        return [e for e in self.exchanges() if e.method == "POST" and e.path == COLLECT]

    def wait_for_beacon(self, *, timeout: float = 10.0) -> list[Exchange]:
        """The beacons once one has been answered, and SETTLE_MS more for
        any other (there should be none) to come."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not self.beacons() and time.monotonic() < deadline:
                self._changed.wait(timeout=0.1)
        time.sleep(SETTLE_MS / 1000)
        return self.beacons()

    def handler(self) -> type[StaticFilesHandler]:
        log = self

        class Handler(StaticFilesHandler):
            """Hands every request to the application, where WhiteNoise
            serves the collected files under their hashed names as in
            production (the default handler's finders know only the
            unhashed ones), and records each exchange."""

            def _should_handle(self, path: str) -> bool:
                return False

            def __call__(self, environ: dict[str, Any], start_response: Any) -> HttpResponseBase:
                body = b""
                if environ["REQUEST_METHOD"] == "POST":
                    # Read here, and put back for the view to read again.
                    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
                    environ["wsgi.input"] = io.BytesIO(body)
                seen: dict[str, Any] = {}

                def recording_start_response(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
                    seen["status"] = int(status.split()[0])
                    seen["headers"] = {name.lower(): value for name, value in headers}
                    return start_response(status, headers, *args)

                # A static file comes back as the server's file wrapper, not
                # as a response object: status and headers are taken from
                # start_response.
                response = super().__call__(environ, recording_start_response)
                log.record(
                    Exchange(
                        method=environ["REQUEST_METHOD"],
                        path=environ["PATH_INFO"],
                        query=environ.get("QUERY_STRING", ""),
                        origin=environ.get("HTTP_ORIGIN", ""),
                        user_agent=environ.get("HTTP_USER_AGENT", ""),
                        content_type=environ.get("CONTENT_TYPE", ""),
                        body=body,
                        status=seen["status"],
                        headers=seen["headers"],
                        # Only the endpoint's JSON answers are kept.
                        answer=response.content if isinstance(response, HttpResponse) else b"",
                    )
                )
                return response

        return Handler


@pytest.fixture(scope="module")
def perfhub_log() -> PerfHubLog:
    return PerfHubLog()


@pytest.fixture(scope="module")
def live_server(perfhub_log: PerfHubLog) -> Iterator[LiveServer]:
    # "localhost", where the site is on 127.0.0.1: two origins.
    server = LiveServer("localhost", start=False)
    server.thread.static_handler = perfhub_log.handler()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def page_server(live_server: LiveServer, perfhub_log: PerfHubLog) -> Iterator[PageServer]:
    require(CHROMIUM.exists(), f"{CHROMIUM} is not installed (apt-get install chromium)")
    perfhub_log.reset()
    server = PageServer()
    server.perfhub_origin = live_server.url
    server.start()
    yield server
    server.stop()


@pytest.fixture
def site(page_server: PageServer, live_server: LiveServer) -> Site:
    """The monitored site in PerfHub, allowing the page server's origin only,
    with its key and PerfHub's static URLs filled into the pages."""
    site = site_create(name="acme-outdoor", allowed_origins=[page_server.origin])
    page_server.placeholders = {
        "__WEB_VITALS__": live_server.url + static(WEB_VITALS),
        "__RUM__": live_server.url + static(RUM),
        "__KEY__": site.public_key,
    }
    return site


@contextmanager
def browsing(*, user_agent: str | None) -> Iterator[tuple[Page, list[str]]]:
    """Chromium for the length of a with block: its page, and the console
    errors, uncaught exceptions and CSP violations of what it shows.

    Playwright's sync API marks an asyncio loop as running in this thread
    while it lives, and Django refuses ORM calls then: the tests make theirs
    before and after the block, so DJANGO_ALLOW_ASYNC_UNSAFE stays unset.

    A user agent is given to Chromium itself: Playwright's user_agent
    option overrides it per page over DevTools, and a beacon sent at
    pagehide, which outlives its page, still carries HeadlessChrome."""
    errors: list[str] = []
    args = [*CHROMIUM_ARGS, f"--user-agent={user_agent}"] if user_agent else CHROMIUM_ARGS
    with playwright_running() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 720})
            context.add_init_script(CSP_LISTENER)
            page = context.new_page()

            record_console_errors(page, errors)
            yield page, errors
            context.close()
        finally:
            browser.close()


def open_product_page(page: Page, page_server: PageServer) -> None:
    """Loads the product page and waits for the hero image and the banner's
    layout shift."""
    page.goto(page_server.url("product.html"))
    page.wait_for_function(LOADED_AND_SHIFTED)


def leave(page: Page, page_server: PageServer, perfhub_log: PerfHubLog) -> Exchange:
    """Navigates away, which fires pagehide, where rum.js flushes; returns
    PerfHub's answer to the one beacon that sends."""
    page.goto(page_server.url("next.html"))
    beacons = perfhub_log.wait_for_beacon()
    assert len(beacons) == 1, beacons
    return beacons[0]


def test_a_page_view_lands_in_the_database_with_attribution_route_and_device(
    live_server: LiveServer, page_server: PageServer, perfhub_log: PerfHubLog, site: Site
) -> None:
    with browsing(user_agent=CHROME_DESKTOP) as (page, console_errors):
        open_product_page(page, page_server)
        page.get_by_role("button", name="Add to cart").click()
        page.mouse.wheel(0, 600)
        page.wait_for_function("() => scrollY > 0")
        page.evaluate(INTERACTION_REPORTED)
        beacon = leave(page, page_server, perfhub_log)
    assert console_errors == []

    # The snippet came from PerfHub under its hashed names; the beacon was a
    # simple CORS request (no preflight) from the site's origin.
    assert sorted((e.method, e.path, e.status) for e in perfhub_log.exchanges()) == sorted(
        [("GET", static(WEB_VITALS), 200), ("GET", static(RUM), 200), ("POST", COLLECT, 202)]
    )
    assert beacon.query == f"key={site.public_key}"
    assert beacon.origin == page_server.origin
    assert beacon.content_type == "text/plain"
    assert {exchange.user_agent for exchange in perfhub_log.exchanges()} == {CHROME_DESKTOP}
    assert beacon.answer_json() == {"accepted": 5, "rejected": 0}
    assert beacon.headers["access-control-allow-origin"] == page_server.origin
    # On the production path the endpoint only appended to the stream.
    assert drain() == (5 if settings.REDIS_URL else 0)

    rows = {row.name: row for row in Metric.objects.filter(site=site)}
    assert Metric.objects.filter(site=site).count() == 5
    assert set(rows) == NAMES
    assert {row.pageview for row in rows.values()} == {beacon.json()["pageview"]}
    for row in rows.values():
        assert row.route == ROUTE
        assert (row.host, row.path) == (urlsplit(page_server.origin).netloc, "/pages/product.html")
        assert (row.device_class, row.browser, row.browser_major, row.os) == ("desktop", "Chrome", "131", "Windows")
        assert row.navigation_type == "navigate"
        assert row.weight == 1
        assert row.rating == rating_for(row.name, row.value), row

    lcp = rows["LCP"]
    assert lcp.value >= HERO_DELAY * 1000
    assert lcp.attribution["target"] == "#product>img.hero"
    assert lcp.attribution["url"] == page_server.url("hero.png")
    assert lcp.attribution["resourceLoadDuration"] >= HERO_DELAY * 1000 * 0.8

    inp = rows["INP"]
    # shop.js's click handler busy-waits 150 ms.
    assert inp.value >= 150
    assert inp.attribution["interactionTarget"] == "#add-to-cart"
    assert inp.attribution["interactionType"] == "pointer"
    assert inp.attribution["processingDuration"] >= 140
    assert_longest_script_if_attributed(inp.attribution, page_server.url("shop.js"))

    cls = rows["CLS"]
    assert cls.value > 0
    assert cls.attribution["largestShiftTarget"]
    assert cls.attribution["largestShiftValue"] > 0

    fcp, ttfb = rows["FCP"], rows["TTFB"]
    assert 0 < ttfb.value <= fcp.value <= lcp.value
    assert fcp.attribution["timeToFirstByte"] == pytest.approx(ttfb.value)
    # The page's Server-Timing, PerfHub's names only ("edge" is left out).
    assert ttfb.attribution["serverTiming"] == {"db": 12.5, "cache": 0.4, "app": 31}

    # One page view: one minute rollup per metric, with the row's
    # dimensions, value and rating.
    rollups = {rollup.name: rollup for rollup in Rollup.objects.filter(site=site)}
    assert Rollup.objects.filter(site=site).count() == 5
    assert set(rollups) == NAMES
    for name, rollup in rollups.items():
        row = rows[name]
        assert rollup.bucket_seconds == Rollup.MINUTE
        assert rollup.bucket_start == row.occurred_at.replace(second=0, microsecond=0)
        assert (rollup.route, rollup.device_class, rollup.browser) == (ROUTE, "desktop", "Chrome")
        assert (rollup.samples, rollup.weight) == (1, 1)
        assert rollup.value_sum == pytest.approx(row.value)
        by_rating = {
            Rating.GOOD: rollup.good,
            Rating.NEEDS_IMPROVEMENT: rollup.needs_improvement,
            Rating.POOR: rollup.poor,
        }
        assert by_rating == {rating: float(rating == row.rating) for rating in Rating}


def test_headless_chromium_is_answered_as_a_bot_and_nothing_is_stored(
    live_server: LiveServer, page_server: PageServer, perfhub_log: PerfHubLog, site: Site
) -> None:
    with browsing(user_agent=None) as (page, console_errors):
        open_product_page(page, page_server)
        user_agent = page.evaluate("navigator.userAgent")
        beacon = leave(page, page_server, perfhub_log)
    assert console_errors == []

    assert "HeadlessChrome/" in user_agent
    assert beacon.user_agent == user_agent
    assert beacon.origin == page_server.origin
    assert beacon.status == HTTPStatus.ACCEPTED
    assert beacon.answer_json() == {"accepted": 0, "rejected": 0, "ignored": "bot"}
    assert beacon.headers["access-control-allow-origin"] == page_server.origin
    # The beacon was a full one: ignored for its sender, not for its content.
    assert {metric["name"] for metric in beacon.json()["metrics"]} >= {"LCP", "CLS", "FCP", "TTFB"}
    assert drain() == 0
    assert not Metric.objects.filter(site=site).exists()
    assert not Rollup.objects.filter(site=site).exists()
