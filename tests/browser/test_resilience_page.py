"""The resilience page in a real browser: live updates by htmx under the
strict Content-Security-Policy, and the reset button."""

from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from apps.resilience.breakers import all_breakers, forget_local_state
from tests.helpers import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _closed_breakers() -> Iterator[None]:
    forget_local_state()
    yield
    for item in all_breakers():
        item.close("test tear-down")


def test_breaker_state_updates_live_and_an_admin_resets_it(owner: User, page: Page, console_errors: list[str]) -> None:
    from apps.resilience.breakers import breaker

    page.goto("/login/?next=/resilience/")
    page.get_by_label("Username").fill(owner.get_username())
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", level=1, name="Resilience")).to_be_visible()
    row = page.get_by_role("table", name="Circuit breakers").get_by_role("row").filter(has_text="webhooks")
    expect(row).to_contain_text("closed")

    # The breaker opens elsewhere; the page's htmx poll (every 5 s) shows it.
    breaker("webhooks").open("receiver refused the connection")
    expect(row).to_contain_text("open", timeout=12_000)
    expect(row).to_contain_text("receiver refused the connection")

    row.get_by_role("button", name="Reset").click()
    expect(page.get_by_text("Circuit breaker webhooks reset to closed.")).to_be_visible()
    expect(row).to_contain_text("reset by owner")
    expect(page.get_by_role("region", name="Recent resets")).to_contain_text("owner")
    assert console_errors == []
