"""The cache page in a real browser: it polls while visible, pauses while
hidden, switches windows with htmx, all under the strict CSP."""

import re

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Page, Request, Route, expect

from tests.browser.test_pages import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SET_HIDDEN = "(hidden) => Object.defineProperty(document, 'hidden', {configurable: true, get: () => hidden})"


def _is_poll(request: Request) -> bool:
    return "/cache/?window=" in request.url and request.headers.get("hx-request") == "true"


def test_the_cache_page_polls_while_visible_and_switches_windows(
    viewer: User, page: Page, console_errors: list[str]
) -> None:
    log_in(page, viewer)
    page.goto("/cache/")
    expect(page.get_by_role("heading", level=1, name="Cache")).to_be_visible()
    with page.expect_request(_is_poll, timeout=15_000) as first_poll:
        pass
    assert first_poll.value.url.endswith("/cache/?window=5m")

    # A poll that answers while a newly chosen window is loading must not
    # leave the page on the old window (the choice's target replaced under
    # it): the poll is dropped while the choice is in flight.
    held: list[Route] = []
    page.route(re.compile(r"/cache/\?window=1h$"), lambda route: held.append(route))
    page.get_by_role("navigation", name="Window").get_by_role("link", name="1h", exact=True).click()
    while not held:
        page.wait_for_timeout(50)
    page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    page.wait_for_timeout(1_000)
    for route in held:
        route.continue_()
    page.unroute(re.compile(r"/cache/\?window=1h$"))
    expect(page).to_have_url(re.compile(r"/cache/\?window=1h$"))
    expect(page.locator('.window-chooser a[aria-current="true"]')).to_have_text("1h")
    expect(page.get_by_role("heading", level=2, name="PerfHub’s lookups per key prefix")).to_be_visible()

    # A hidden tab sends nothing for more than a polling interval…
    polls: list[str] = []
    page.evaluate(SET_HIDDEN, True)
    page.on("request", lambda request: polls.append(request.url) if _is_poll(request) else None)
    page.wait_for_timeout(6_500)
    assert polls == []
    # …and refreshes as soon as it is shown again.
    with page.expect_request(_is_poll, timeout=3_000) as shown:
        page.evaluate(SET_HIDDEN, False)
        page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    assert shown.value.url.endswith("/cache/?window=1h")
    # A window chosen while a poll is in flight aborts that poll (hx-sync
    # "replace"), and htmx logs the abort (htmx:sendAbort, then
    # htmx:afterRequest) as errors; whether the click lands in a poll's flight
    # depends on timing. Nothing else may be logged.
    aborted = ("console: htmx:sendAbort", "console: htmx:afterRequest")
    assert [error for error in console_errors if not error.startswith(aborted)] == []
