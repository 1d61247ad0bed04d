"""The database page in a real browser: htmx polling, the window chooser and
EXPLAIN (or the SQLite integrity check) under the strict CSP."""

import re

import pytest
from django.contrib.auth.models import User
from django.db import connection
from playwright.sync_api import Page, expect

from tests.browser.test_pages import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# For a person to look at after a run; nothing compares pixels.
SCREENSHOT = "/tmp/perfhub-database.png"  # noqa: S108


def test_the_database_page_polls_and_answers_admins(owner: User, page: Page, console_errors: list[str]) -> None:
    log_in(page, owner)
    page.goto("/database/")
    expect(page.get_by_role("heading", level=1, name="Database")).to_be_visible()

    if connection.vendor == "postgresql":
        page.get_by_role("navigation", name="Window").get_by_role("link", name="5 minutes").click()
        expect(page.get_by_role("heading", name="Slow queries, last 5 minutes")).to_be_visible()

        page.get_by_label("SQL").fill("SELECT relname FROM pg_class WHERE relname = 'database_snapshot'")
        page.get_by_role("button", name="Explain", exact=True).click()
        expect(page.locator("#explain-result")).to_contain_text("on pg_class")
        page.screenshot(path=SCREENSHOT, full_page=True)

        # A refused statement answers 400; its message is shown, not dropped.
        page.get_by_label("SQL").fill("DROP TABLE database_snapshot")
        page.get_by_role("button", name="Explain", exact=True).click()
        expect(page.locator("#explain-result")).to_contain_text("cannot be explained")

        with page.expect_request(re.compile(r"/database/\?panel=connections"), timeout=15_000):
            pass  # the connections panel polls every 10 s
    else:
        page.get_by_role("button", name="Check integrity").click()
        expect(page.locator("#integrity-result")).to_contain_text("found no problems")
        page.screenshot(path=SCREENSHOT, full_page=True)

        with page.expect_request(re.compile(r"/database/\?panel=sqlite"), timeout=15_000):
            pass
    # Chromium logs every 4xx response; the refused EXPLAIN's 400 is the one expected.
    expected = "status of 400 (Bad Request) (http://localhost"
    assert [e for e in console_errors if not (expected in e and e.endswith("/database/explain/)"))] == []
