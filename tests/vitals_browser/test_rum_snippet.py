"""PerfHub's RUM snippet (static/perfhub/rum.js) in headless Chromium.

The collect endpoint may not exist yet, so the snippet is checked against a
capture server on loopback with two origins, as in production: the monitored
site (tests/vitals_browser/pages, with a strict Content-Security-Policy) and
PerfHub (static/ and a collect endpoint that records every request). Being
cross-origin is what makes "no CORS preflight" mean something.
"""

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html import escape
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Error, Page, Playwright

from tests.browser_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    CSP_LISTENER,
    HERO_PNG,
    INTERACTION_REPORTED,
    LONGEST_SCRIPT_FIELDS,
    assert_longest_script_if_attributed,
    playwright_running,
)
from tests.helpers import require

pytestmark = pytest.mark.browser

BASE_DIR = Path(__file__).resolve().parent.parent.parent
PAGES = Path(__file__).resolve().parent / "pages"
STATIC = BASE_DIR / "static"
COLLECT = "/api/v1/vitals/collect"
# The keepalive quota sendBeacon and fetch(keepalive) share.
KEEPALIVE_QUOTA = 64 * 1024
# What rum.js aims at, leaving room under the quota.
BODY_LIMIT = 60 * 1024
HERO_DELAY = 0.3
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
# web-vitals 6: "v6-" + Date.now() + "-" + a 13-digit random integer.
METRIC_ID = re.compile(r"^v6-\d{13}-\d{13}$")
NUMBER = (int, float)
ENVELOPE_KEYS = {"v", "pageview", "url", "route", "release", "sample_rate", "connection", "sent_at", "metrics"}


def pin_first_random(value: float) -> str:
    """An init script making the page's first Math.random() return value:
    rum.js draws the sampling decision first, and web-vitals' metric ids
    still get real randomness afterwards."""
    return f"""(() => {{
  const random = Math.random;
  Math.random = () => {{ Math.random = random; return {value!r}; }};
}})();"""


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str
    origin: str
    body: bytes

    def json(self) -> dict[str, Any]:
        payload: dict[str, Any] = json.loads(self.body)
        return payload


class Capture:
    """Two threaded HTTP servers on 127.0.0.1: the site and PerfHub."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._requests: list[Request] = []
        self._site = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(site=True))
        self._perfhub = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(site=False))
        self.site_url = f"http://127.0.0.1:{self._site.server_port}"
        self.perfhub_url = f"http://127.0.0.1:{self._perfhub.server_port}"
        self._threads = [
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            for server in (self._site, self._perfhub)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        for server in (self._site, self._perfhub):
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def reset(self) -> None:
        with self._changed:
            self._requests.clear()

    def requests_to_perfhub(self) -> list[Request]:
        with self._changed:
            return list(self._requests)

    def beacons(self) -> list[Request]:
        return [r for r in self.requests_to_perfhub() if r.method == "POST" and r.path == COLLECT]

    def wait_for_beacons(self, count: int, *, timeout: float = 10.0, settle: float = 1.0) -> list[Request]:
        """At least count beacons, then settle seconds more so that an extra
        one shows up too."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.beacons()) < count and time.monotonic() < deadline:
                self._changed.wait(timeout=0.1)
        time.sleep(settle)
        return self.beacons()

    def _record(self, request: Request) -> None:
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()

    def _handler(self, *, site: bool) -> type[BaseHTTPRequestHandler]:
        capture = self

        class Handler(BaseHTTPRequestHandler):
            # A stuck connection ends instead of holding a thread.
            timeout = 10

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if site:
                    self._site_get()
                else:
                    self._record(b"")
                    self._static_get()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if site or length > KEEPALIVE_QUOTA:
                    self.send_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE if length else HTTPStatus.NOT_FOUND)
                    return
                body = self.rfile.read(length)
                self._record(body)
                if urlsplit(self.path).path != COLLECT:
                    self.send_error(HTTPStatus.NOT_FOUND)
                    return
                count = len(json.loads(body).get("metrics", []))
                self._send(HTTPStatus.ACCEPTED, "application/json", json.dumps({"accepted": count, "rejected": 0}))

            def do_OPTIONS(self) -> None:
                # Recorded so that a test can tell a preflight happened.
                self._record(b"")
                self.send_response(HTTPStatus.NO_CONTENT)
                self._cors()
                self.send_header("Access-Control-Allow-Methods", "POST")
                self.send_header("Access-Control-Allow-Headers", "Content-Type, X-PerfHub-Key")
                self.end_headers()

            def _record(self, body: bytes) -> None:
                url = urlsplit(self.path)
                capture._record(
                    Request(
                        method=self.command,
                        path=url.path,
                        query=parse_qs(url.query),
                        content_type=self.headers.get("Content-Type", ""),
                        origin=self.headers.get("Origin", ""),
                        body=body,
                    )
                )

            def _site_get(self) -> None:
                url = urlsplit(self.path)
                name = url.path.removeprefix("/pages/")
                if name == "/favicon.ico":
                    self.send_response(HTTPStatus.NO_CONTENT)
                    self.end_headers()
                    return
                if name == "hero.png":
                    # Slow enough for LCP to have a resource load to attribute.
                    time.sleep(HERO_DELAY)
                    self._send(HTTPStatus.OK, "image/png", HERO_PNG)
                    return
                file = PAGES / name
                if "/" in name or not name or not file.is_file():
                    self.send_error(HTTPStatus.NOT_FOUND)
                    return
                kind = {".html": "text/html", ".css": "text/css", ".js": "text/javascript"}[file.suffix]
                text = file.read_text()
                if kind == "text/html":
                    rate = parse_qs(url.query).get("rate", ["1"])[0]
                    text = text.replace("__PERFHUB__", capture.perfhub_url).replace("__RATE__", escape(rate))
                self._send(HTTPStatus.OK, f"{kind}; charset=utf-8", text.encode())

            def _static_get(self) -> None:
                path = urlsplit(self.path).path.removeprefix("/static/")
                file = (STATIC / path).resolve()
                if not file.is_relative_to(STATIC) or not file.is_file():
                    self.send_error(HTTPStatus.NOT_FOUND)
                    return
                self._send(HTTPStatus.OK, "text/javascript; charset=utf-8", file.read_bytes())

            def _cors(self) -> None:
                self.send_header("Access-Control-Allow-Origin", "*")

            def _send(self, status: HTTPStatus, content_type: str, body: str | bytes) -> None:
                data = body.encode() if isinstance(body, str) else body
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                if site:
                    # Strict: scripts, styles, images and connections only from
                    # the site itself and PerfHub; no inline code, no eval.
                    self.send_header("Content-Security-Policy", f"default-src 'self' {capture.perfhub_url}")
                    # PerfHub's own names, plus one rum.js must leave out.
                    self.send_header("Server-Timing", "db;dur=12.5, cache;dur=0.4, app;dur=31, edge;dur=3")
                else:
                    self._cors()
                self.end_headers()
                self.wfile.write(data)

        return Handler


@pytest.fixture(scope="module")
def capture() -> Iterator[Capture]:
    server = Capture()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    require(CHROMIUM.exists(), f"{CHROMIUM} is not installed (apt-get install chromium)")
    with playwright_running() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@dataclass
class Console:
    errors: list[str]
    warnings: list[str]


@pytest.fixture
def console() -> Console:
    return Console(errors=[], warnings=[])


@pytest.fixture
def page(browser: Browser, capture: Capture, console: Console) -> Iterator[Page]:
    """A fresh context on the site; the capture server starts the test empty."""
    capture.reset()
    context = browser.new_context(base_url=capture.site_url, viewport={"width": 1280, "height": 720})
    context.add_init_script(CSP_LISTENER)
    page = context.new_page()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            console.errors.append(message.text)
        elif message.type == "warning":
            console.warnings.append(message.text)

    def on_page_error(error: Error) -> None:
        console.errors.append(f"uncaught: {error.message}")

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    yield page
    context.close()


# Headless Chromium keeps every page "visible" (bring_to_front on another
# tab changes nothing), so a hide is staged: visibilityState is overridden
# and the event dispatched, which is what web-vitals and rum.js both read.
# Unlike the real one this event does not bubble; rum.js listens on document,
# where it arrives either way.
HIDE = """() => {
  Object.defineProperty(document, "visibilityState", {value: "hidden", configurable: true});
  document.dispatchEvent(new Event("visibilitychange"));
}"""
SHOW = """() => {
  delete document.visibilityState;
  document.dispatchEvent(new Event("visibilitychange"));
}"""
# Three more late banners, a frame apart, so that CLS grows and web-vitals
# reports it more than once before the next beacon: at the top of the page,
# where scroll anchoring does not hide the shifts, and over 500 ms after the
# last input, since shifts right after one do not count.
SHIFT_AGAIN = """() => new Promise((resolve) => {
  scrollTo(0, 0);
  const frame = () => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)));
  setTimeout(async () => {
    for (const text of ["Last sizes in stock!", "Order by 2 pm", "Free returns"]) {
      const banner = document.createElement("div");
      banner.className = "promo";
      banner.textContent = text;
      document.body.insertBefore(banner, document.body.firstChild);
      await frame();
    }
    setTimeout(resolve, 100);
  }, 600);
})"""
# Stops every later listener of an event, rum.js's included, so that a test
# can show the other flush path suffices alone.
BLOCK = 'addEventListener("{event}", (event) => event.stopImmediatePropagation(), true);'


def window_listener_types(page: Page) -> set[str]:
    """The event types with a listener on window, from DevTools' view."""
    session = page.context.new_cdp_session(page)
    try:
        window = session.send("Runtime.evaluate", {"expression": "window"})["result"]["objectId"]
        listeners = session.send("DOMDebugger.getEventListeners", {"objectId": window})["listeners"]
        return {listener["type"] for listener in listeners}
    finally:
        session.detach()


def open_shop(page: Page) -> None:
    """Loads the product page, sampled (its rate is 0.5), and waits for the
    hero image and the late banner's layout shift."""
    page.add_init_script(pin_first_random(0.25))
    page.goto("/pages/shop.html")
    page.wait_for_function("() => document.querySelector('.hero').complete && document.documentElement.dataset.shifted")


def interact(page: Page) -> None:
    """A slow click (INP) and a scroll; returns once web-vitals has INP."""
    page.get_by_role("button", name="Add to cart").click()
    page.mouse.wheel(0, 600)
    page.evaluate(INTERACTION_REPORTED)


def by_name(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    metrics: list[dict[str, Any]] = payload["metrics"]
    names = [metric["name"] for metric in metrics]
    assert len(names) == len(set(names)), names
    return {metric["name"]: metric for metric in metrics}


def assert_beacon_request(beacon: Request, capture: Capture, key: str) -> None:
    assert beacon.query == {"key": [key]}
    # What sendBeacon sends for a text/plain Blob: a simple CORS request.
    assert beacon.content_type == "text/plain"
    assert beacon.origin == capture.site_url
    assert len(beacon.body) <= KEEPALIVE_QUOTA


def assert_shop_payload(payload: dict[str, Any], capture: Capture, *, sent_after_ms: int) -> None:
    """The beacon contract of DESIGN.md, for the product page after a click,
    a scroll and a layout shift."""
    assert set(payload) == ENVELOPE_KEYS
    assert payload["v"] == 1
    assert UUID.match(payload["pageview"]), payload["pageview"]
    assert payload["url"] == f"{capture.site_url}/pages/shop.html"
    assert payload["route"] == "/products/:id"
    assert payload["release"] == "2026.11.27-abc123"
    assert payload["sample_rate"] == 0.5
    assert isinstance(payload["connection"], str)
    assert isinstance(payload["sent_at"], int)
    assert sent_after_ms <= payload["sent_at"] <= time.time() * 1000

    metrics = by_name(payload)
    assert set(metrics) == {"LCP", "INP", "CLS", "FCP", "TTFB"}
    for metric in metrics.values():
        assert set(metric) == {"name", "value", "delta", "id", "rating", "navigationType", "attribution"}
        assert METRIC_ID.match(metric["id"]), metric["id"]
        assert isinstance(metric["value"], NUMBER)
        # The first beacon: delta is the whole value, however many times
        # web-vitals reported it (LCP: the heading, then the hero) before.
        assert metric["delta"] == metric["value"]
        assert metric["rating"] in {"good", "needs-improvement", "poor"}
        assert metric["navigationType"] == "navigate"
    assert len({metric["id"] for metric in metrics.values()}) == 5

    lcp = metrics["LCP"]["attribution"]
    assert set(lcp) == {
        "target",
        "url",
        "timeToFirstByte",
        "resourceLoadDelay",
        "resourceLoadDuration",
        "elementRenderDelay",
    }
    assert lcp["url"].endswith("/pages/hero.png")
    assert lcp["target"] == "#product>img.hero"
    # The capture server holds the image back for HERO_DELAY.
    assert lcp["resourceLoadDuration"] >= HERO_DELAY * 1000 * 0.8

    inp = metrics["INP"]["attribution"]
    assert set(inp) - LONGEST_SCRIPT_FIELDS == {
        "interactionTarget",
        "interactionType",
        "inputDelay",
        "processingDuration",
        "presentationDelay",
        "loadState",
    }
    assert metrics["INP"]["value"] >= 150
    assert inp["interactionTarget"] == "#add-to-cart"
    assert inp["interactionType"] == "pointer"
    assert inp["processingDuration"] >= 140
    assert inp["loadState"] == "complete"
    # From the Long Animation Frame API, which this Chromium has.
    assert_longest_script_if_attributed(inp, f"{capture.site_url}/pages/shop.js")

    cls = metrics["CLS"]["attribution"]
    assert set(cls) == {"largestShiftTarget", "largestShiftValue", "largestShiftTime", "loadState"}
    assert metrics["CLS"]["value"] > 0
    assert cls["largestShiftValue"] > 0
    assert cls["largestShiftTarget"]

    assert set(metrics["FCP"]["attribution"]) == {"timeToFirstByte", "firstByteToFCP", "loadState"}

    ttfb = metrics["TTFB"]["attribution"]
    assert set(ttfb) == {
        "waitingDuration",
        "cacheDuration",
        "dnsDuration",
        "connectionDuration",
        "requestDuration",
        "serverTiming",
    }
    # The page's Server-Timing also names "edge", which is not PerfHub's.
    assert ttfb["serverTiming"] == {"db": 12.5, "cache": 0.4, "app": 31}


def test_leaving_the_page_sends_one_beacon_with_all_five_metrics(
    page: Page, capture: Capture, console: Console
) -> None:
    started_ms = int(time.time() * 1000)
    open_shop(page)
    interact(page)

    # Chromium fires pagehide, then visibilitychange: both flush, the second
    # finds the queue empty.
    page.goto("/pages/next.html")

    beacons = capture.wait_for_beacons(1)
    assert len(beacons) == 1
    assert_beacon_request(beacons[0], capture, "pk_test_shop")
    assert_shop_payload(beacons[0].json(), capture, sent_after_ms=started_ms)
    assert [r.method for r in capture.requests_to_perfhub()] == ["GET", "GET", "POST"], "no preflight"
    assert console.errors == []


@pytest.mark.parametrize("blocked", ["visibilitychange", "pagehide"])
def test_either_flush_path_alone_sends_everything(page: Page, capture: Capture, console: Console, blocked: str) -> None:
    """Blocking one event shows the other is enough: pagehide for browsers
    whose visibilitychange does not come on unload, visibilitychange for a
    tab switch or an app switch on a phone, where no pagehide comes."""
    page.add_init_script(BLOCK.format(event=blocked))
    open_shop(page)
    interact(page)

    if blocked == "visibilitychange":
        page.goto("/pages/next.html")
    else:
        page.evaluate(HIDE)

    beacons = capture.wait_for_beacons(1)
    assert len(beacons) == 1
    assert_beacon_request(beacons[0], capture, "pk_test_shop")
    assert set(by_name(beacons[0].json())) == {"LCP", "INP", "CLS", "FCP", "TTFB"}
    assert console.errors == []


def test_each_hide_sends_only_what_changed_since_the_last(page: Page, capture: Capture, console: Console) -> None:
    open_shop(page)
    interact(page)
    page.evaluate(HIDE)
    first = capture.wait_for_beacons(1)[0].json()

    # Back to the tab: a hide with nothing new sends nothing.
    page.evaluate(SHOW)
    page.evaluate(HIDE)
    assert len(capture.wait_for_beacons(2, timeout=1)) == 1

    # Back again; the single-page app moves on (route read at each send) and
    # more banners shift the page: the same CLS grows.
    page.evaluate(SHOW)
    page.evaluate("window.perfhubRoute = '/products/:id/reviews'")
    page.evaluate(SHIFT_AGAIN)
    page.evaluate(HIDE)
    beacons = capture.wait_for_beacons(2)
    assert len(beacons) == 2
    second = beacons[1].json()

    assert second["pageview"] == first["pageview"]
    assert (first["route"], second["route"]) == ("/products/:id", "/products/:id/reviews")
    assert [metric["name"] for metric in second["metrics"]] == ["CLS"]
    cls_before, cls_after = by_name(first)["CLS"], second["metrics"][0]
    assert cls_after["id"] == cls_before["id"]
    assert cls_after["value"] > cls_before["value"]
    assert cls_after["delta"] == pytest.approx(cls_after["value"] - cls_before["value"])
    assert console.errors == []


def test_a_back_forward_cache_restore_is_a_new_page_view(page: Page, capture: Capture, console: Console) -> None:
    """Playwright's Chromium runs without the back/forward cache, so the
    restore is a synthetic pageshow; web-vitals reacts to it all the same."""
    open_shop(page)
    page.evaluate(HIDE)
    first = capture.wait_for_beacons(1)[0].json()

    page.evaluate(SHOW)
    page.evaluate("dispatchEvent(new PageTransitionEvent('pageshow', {persisted: true}))")
    # web-vitals measures the restore's FCP and LCP two frames later.
    page.evaluate("new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)))")
    page.evaluate(HIDE)
    beacons = capture.wait_for_beacons(2)
    assert len(beacons) == 2
    restored = beacons[1].json()

    assert UUID.match(restored["pageview"])
    assert restored["pageview"] != first["pageview"]
    metrics = by_name(restored)
    assert {"LCP", "FCP", "TTFB"} <= set(metrics)
    assert {metric["navigationType"] for metric in metrics.values()} == {"back-forward-cache"}
    assert not {metric["id"] for metric in metrics.values()} & {metric["id"] for metric in first["metrics"]}
    # The first response's Server-Timing does not explain a restore.
    assert "serverTiming" not in metrics["TTFB"]["attribution"]
    assert console.errors == []


def test_closing_the_tab_sends_the_beacon(page: Page, capture: Capture, console: Console) -> None:
    page.goto("/pages/minimal.html")
    page.wait_for_function("() => window.perfhub")
    # CLS is reported (0) shortly after FCP; TTFB after the load event.
    page.wait_for_timeout(500)

    page.close(run_before_unload=True)

    beacons = capture.wait_for_beacons(1)
    assert len(beacons) == 1
    assert_beacon_request(beacons[0], capture, "pk_test_minimal")
    payload = beacons[0].json()
    # No route, release or interaction on this page: those keys are left out.
    assert set(payload) == ENVELOPE_KEYS - {"route", "release"}
    assert payload["sample_rate"] == 1
    metrics = by_name(payload)
    assert set(metrics) == {"LCP", "CLS", "FCP", "TTFB"}
    assert metrics["CLS"]["value"] == 0
    assert metrics["CLS"]["attribution"] == {}
    # A text LCP has no resource URL.
    assert "url" not in metrics["LCP"]["attribution"]
    assert metrics["LCP"]["attribution"]["target"].startswith("html>body>")
    assert console.errors == []


def test_pageview_is_a_uuid_without_crypto_random_uuid(page: Page, capture: Capture, console: Console) -> None:
    """randomUUID exists only in secure contexts; a site on plain HTTP gets
    the getRandomValues fallback."""
    page.add_init_script("delete Crypto.prototype.randomUUID;")
    page.goto("/pages/minimal.html")
    page.wait_for_function("() => window.perfhub && crypto.randomUUID === undefined")
    page.wait_for_timeout(500)

    page.evaluate("perfhub.flush()")

    beacons = capture.wait_for_beacons(1, settle=0)
    assert UUID.match(beacons[0].json()["pageview"])
    assert console.errors == []


@pytest.mark.parametrize(
    ("rate", "draw", "sent_rate"),
    [
        pytest.param("0.0001", 0.0002, None, id="tiny rate, not drawn"),
        pytest.param("0.5", 0.5, None, id="half, draw on the boundary"),
        pytest.param("0", 0.0, None, id="zero samples nothing"),
        pytest.param("-1", 0.0, None, id="negative samples nothing"),
        pytest.param("0.5", 0.49, 0.5, id="half, drawn"),
        pytest.param("5", 0.99, 1, id="clamped to 1"),
        pytest.param("all", 0.99, 1, id="unparsable means 1"),
    ],
)
def test_sampling_is_decided_once_per_page_view(
    page: Page, capture: Capture, console: Console, rate: str, draw: float, sent_rate: float | None
) -> None:
    page.add_init_script(pin_first_random(draw))
    page.goto(f"/pages/minimal.html?rate={rate}")
    page.wait_for_load_state("load")
    page.wait_for_timeout(300)
    listeners = window_listener_types(page)

    page.goto("/pages/next.html")

    beacons = capture.wait_for_beacons(1, timeout=2)
    if sent_rate is None:
        assert beacons == []
        # Nothing registered: no flush listener, no web-vitals observers.
        assert "pagehide" not in listeners
        assert "pageshow" not in listeners
    else:
        assert len(beacons) == 1
        assert beacons[0].json()["sample_rate"] == sent_rate
        assert {"pagehide", "pageshow"} <= listeners
    assert console.errors == []
    assert console.warnings == []


def test_without_a_key_it_warns_once_and_sends_nothing(page: Page, capture: Capture, console: Console) -> None:
    page.goto("/pages/nokey.html")
    page.wait_for_load_state("load")
    assert page.evaluate("window.perfhub") is None

    page.goto("/pages/next.html")

    assert capture.wait_for_beacons(1, timeout=2) == []
    assert console.warnings == ["PerfHub: no data-perfhub-key, nothing sent"]
    assert console.errors == []


# Reports n LCP metrics with big, multi-byte attribution strings through the
# stand-in web-vitals of bulk.html.
REPORT_MANY = """(n) => {
  for (let i = 0; i < n; i++) {
    webVitals.report({
      name: "LCP", value: i, delta: i, id: `v6-1764280000000-${1000000000000 + i}`, rating: "good",
      navigationType: "navigate",
      attribution: {
        target: "é".repeat(2000), url: "https://cdn.example.com/" + "x".repeat(2000), timeToFirstByte: 1,
        lcpEntry: {}, lcpResourceEntry: {},
      },
    });
  }
}"""


def test_big_queues_are_split_into_beacons_under_the_keepalive_quota(
    page: Page, capture: Capture, console: Console
) -> None:
    page.goto("/pages/bulk.html")
    page.wait_for_function("() => window.perfhub")
    page.evaluate(REPORT_MANY, 300)

    # While the page lives. At unload the 64 KiB quota is shared by every
    # beacon in flight, so only the first of these would leave.
    page.evaluate("perfhub.flush()")

    beacons = capture.wait_for_beacons(6)
    assert len(beacons) >= 6
    metrics = []
    for beacon in beacons:
        assert_beacon_request(beacon, capture, "pk_test_bulk")
        assert len(beacon.body) <= BODY_LIMIT
        metrics.extend(beacon.json()["metrics"])
    assert sorted(metric["value"] for metric in metrics) == list(range(300))
    # Strings cut to 500 characters; the raw entries left out.
    assert {json.dumps(metric["attribution"], sort_keys=True) for metric in metrics} == {
        json.dumps(
            {"target": "é" * 500, "url": "https://cdn.example.com/" + "x" * 476, "timeToFirstByte": 1}, sort_keys=True
        )
    }
    assert console.errors == []


def test_a_metric_too_big_alone_loses_its_attribution_strings(page: Page, capture: Capture) -> None:
    page.goto("/pages/bulk.html")
    page.wait_for_function("() => window.perfhub")
    metrics = [
        {"name": "CLS", "value": 0.01, "id": "small-1", "attribution": {"largestShiftTarget": "#a"}},
        {"name": "LCP", "value": 1, "id": "huge", "attribution": {"target": "🦄" * 40_000, "timeToFirstByte": 5}},
        *[
            {"name": "INP", "value": i, "id": f"many-{i}", "attribution": {"interactionTarget": "ü" * 300}}
            for i in range(400)
        ],
    ]

    page.evaluate("window.perfhubRoute = '/app/' + 'r'.repeat(300)")

    bodies: list[str] = page.evaluate("(metrics) => perfhub.encode(metrics)", metrics)

    assert len(bodies) > 1
    payloads = [json.loads(body) for body in bodies]
    for body, payload in zip(bodies, payloads, strict=True):
        assert len(body.encode()) <= BODY_LIMIT
        # PerfHub's own cap, which these small metrics reach before the size.
        assert len(payload["metrics"]) <= 50
        # Cut to the 200 characters PerfHub stores.
        assert payload["route"] == "/app/" + "r" * 195
        assert {key: value for key, value in payload.items() if key != "metrics"} == {
            key: value for key, value in payloads[0].items() if key != "metrics"
        }
    sent = [metric for payload in payloads for metric in payload["metrics"]]
    assert [metric["id"] for metric in sent] == [metric["id"] for metric in metrics]
    assert sent[1]["attribution"] == {"timeToFirstByte": 5}
    assert sent[0] == metrics[0]
    assert sent[2:] == metrics[2:]
    assert capture.beacons() == []
