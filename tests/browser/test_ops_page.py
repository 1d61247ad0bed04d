"""The ops page in a real browser: live panels under the strict CSP, and no
polling while the tab is hidden."""

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Page, Request, expect
from pytest_django.fixtures import Settings

from tests.browser.test_pages import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

POLL_SECONDS = 5
# For a person to look at after a run; nothing compares pixels.
OPS_SCREENSHOT = "/tmp/perfhub-ops.png"  # noqa: S108
SET_HIDDEN = """(hidden) => {
  Object.defineProperty(document, "hidden", {configurable: true, get: () => hidden});
  document.dispatchEvent(new Event("visibilitychange"));
}"""


def test_panels_refresh_while_visible_and_pause_while_hidden(
    viewer: User, page: Page, console_errors: list[str], settings: Settings
) -> None:
    settings.QUERY_SAMPLE_RATE = 1.0  # so that the insight table has rows to show
    log_in(page, viewer)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Ops").click()
    expect(page.get_by_role("heading", level=1, name="Ops")).to_be_visible()
    expect(page.get_by_role("heading", level=2, name="Requests per view")).to_be_visible()
    expect(page.get_by_role("heading", level=2, name="Query insight")).to_be_visible()

    polls: list[Request] = []
    page.on("request", lambda request: polls.append(request) if request.headers.get("hx-request") else None)

    # A poll replaces the panels with counts over a window of two readings.
    with page.expect_response(lambda r: r.url.endswith("/ops/") and r.request.headers.get("hx-request") == "true"):
        pass
    expect(page.get_by_test_id("ops-source")).to_contain_text("Counts and rates over the last")
    expect(page.get_by_test_id("ops-views").get_by_text("metrics:ops", exact=True)).to_be_visible()
    expect(page.get_by_test_id("insight-views").get_by_text("metrics:ops", exact=True)).to_be_visible()
    page.screenshot(path=OPS_SCREENSHOT, full_page=True)

    page.evaluate(SET_HIDDEN, True)
    sent = len(polls)
    page.wait_for_timeout((POLL_SECONDS + 1.5) * 1000)
    assert len(polls) == sent, "polled while hidden"

    with page.expect_response(lambda r: r.url.endswith("/ops/"), timeout=2000):
        page.evaluate(SET_HIDDEN, False)
    assert console_errors == []
