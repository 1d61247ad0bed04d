"""What every browser test shares: the Chromium to drive, how to catch CSP
violations and console errors, and a hero image that counts for LCP."""

import random
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.db import connections
from playwright.sync_api import ConsoleMessage, Error, Page, Playwright, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium tries Google's hosts, and
# this machine's closed network refuses them.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# Logs CSP violations as console errors with their directive and blocked URL,
# which the console message alone does not always name (e.g. for inline
# styles). Playwright injects init scripts over CDP, so the page's CSP does
# not block this one.
CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error(
    `CSP violation: ${event.violatedDirective} blocked ${event.blockedURI || "inline"}` +
      ` in ${event.sourceFile || event.documentURI}:${event.lineNumber}`,
  );
});
"""


# For the product page of the RUM tests (tests/vitals_browser/pages), after
# its "Add to cart" click: resolves once the click's Event Timing entry exists and an idle period has
# passed: web-vitals hands INP over in an idle callback queued before this one.
# Both the click's event entry and the long animation frame that ran
# shop.js's click handler are waited for before the page is hidden. That
# makes the INP's longest script likely, not certain: see
# assert_longest_script_if_attributed. The frame is picked by its handler:
# on a loaded machine shop.js's own evaluation or its banner timer can make
# a long frame of their own, already in the buffer.
INTERACTION_REPORTED = """() => new Promise((resolve) => {
  const seen = new Set();
  const saw = (what) => {
    seen.add(what);
    if (seen.size === 2) requestIdleCallback(() => resolve(), {timeout: 2000});
  };
  new PerformanceObserver((list, observer) => {
    if (list.getEntries().some((entry) => entry.interactionId)) {
      observer.disconnect();
      saw("event");
    }
  }).observe({type: "event", buffered: true, durationThreshold: 16});
  new PerformanceObserver((list, observer) => {
    const ranTheHandler = (frame) => frame.scripts.some((script) => script.invoker === "BUTTON#add-to-cart.onclick");
    if (list.getEntries().some(ranTheHandler)) {
      observer.disconnect();
      saw("frame");
    }
  }).observe({type: "long-animation-frame", buffered: true});
})"""


LONGEST_SCRIPT_FIELDS = frozenset(
    {"longestScriptURL", "longestScriptInvoker", "longestScriptDuration", "longestScriptSubpart"}
)


def assert_longest_script_if_attributed(attribution: dict[str, Any], script_url: str) -> None:
    """The INP attribution rum.js sends names shop.js's click handler as the
    longest script, with all four fields, or carries none of them.

    None is what Chromium and web-vitals sometimes give on a loaded machine
    (a CI run once): with reportAllChanges, web-vitals works out INP's
    attribution when it reports the value, from the long animation frames
    it has seen by then, and reports again only when the value changes. When
    the click's frame is dispatched after its event entry has been handled,
    the reported INP has no longest script, and nothing the page does later
    adds it. A half-filled or wrong set of fields would be rum.js's fault,
    and fails here."""
    present = LONGEST_SCRIPT_FIELDS & attribution.keys()
    assert present in (set(), LONGEST_SCRIPT_FIELDS), attribution
    if present:
        assert attribution["longestScriptURL"] == script_url
        assert attribution["longestScriptInvoker"] == "BUTTON#add-to-cart.onclick"
        assert attribution["longestScriptDuration"] >= 140
        assert attribution["longestScriptSubpart"] == "processing-duration"


@contextmanager
def playwright_running() -> Iterator[Playwright]:
    """Playwright's sync API, started for the length of a with block; the
    database connections this thread opened meanwhile are closed at its end.

    While Playwright runs, it marks an asyncio loop as running in this
    thread, and Django then keeps the thread's connections apart from its
    usual ones (asgiref's Local follows the async context while a loop
    runs). The test teardown, after the block, closes only the usual ones:
    a connection opened inside stayed checked out of the pool, and dropping
    the test database at the end of the run failed with "being accessed by
    other users". Only open ones are closed: Django refuses even a no-op
    close while a loop runs unless the test allowed it, and a test that
    opened one inside the block had to allow it."""
    with sync_playwright() as driver:
        try:
            yield driver
        finally:
            for connection in connections.all(initialized_only=True):
                if connection.connection is not None:
                    connection.close()


def record_console_errors(page: Page, errors: list[str]) -> None:
    """Append the page's console errors and uncaught exceptions to ``errors``."""

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"console: {message.text} ({message.location.get('url', '')})")

    def on_page_error(error: Error) -> None:
        errors.append(f"pageerror: {error.message}")

    page.on("console", on_console)
    page.on("pageerror", on_page_error)


def png(width: int, height: int) -> bytes:
    """A noisy greyscale PNG. Chromium ignores low-entropy images (under
    0.05 bits per pixel) as LCP candidates, so a flat colour would not do."""
    noise = random.Random(42)
    rows = b"".join(b"\x00" + noise.randbytes(width) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


HERO_PNG = png(960, 480)
