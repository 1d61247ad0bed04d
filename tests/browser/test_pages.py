"""PerfHub's pages in a real browser, under the strict Content-Security-Policy."""

import http.client
import re

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from apps.core.models import ApiToken
from apps.core.services import api_token_create
from tests.helpers import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# For a person to look at after a run; nothing compares pixels.
OVERVIEW_SCREENSHOT = "/tmp/perfhub-overview.png"  # noqa: S108
LOGIN_PHONE_SCREENSHOT = "/tmp/perfhub-login-phone.png"  # noqa: S108
# Names the elements that stick out, for the failure message.
WIDER_THAN_THE_SCREEN = """[...document.querySelectorAll("body *")]
  .filter((element) => element.getBoundingClientRect().right > window.innerWidth)
  .map((element) => `${element.tagName.toLowerCase()} ${element.textContent.trim().slice(0, 60)}`)"""


def log_in(page: Page, user: User) -> None:
    page.goto("/login/")
    page.get_by_label("Username").fill(user.get_username())
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", level=1, name="Overview")).to_be_visible()


def api_status(live_server: LiveServer, secret: str) -> int:
    """The status of an API call made with ``secret``, outside the browser."""
    connection = http.client.HTTPConnection(live_server.thread.host, live_server.thread.port, timeout=10)
    try:
        connection.request("GET", "/api/v1/performance/metrics", headers={"Authorization": f"Bearer {secret}"})
        return connection.getresponse().status
    finally:
        connection.close()


def test_login_form_leads_to_the_overview(owner: User, page: Page, console_errors: list[str]) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))
    expect(page.get_by_role("heading", level=1, name="Log in to PerfHub")).to_be_visible()

    page.get_by_label("Username").fill("owner")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()

    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.get_by_role("heading", level=1, name="Overview")).to_be_visible()
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Overview")).to_have_attribute("aria-current", "page")
    expect(nav.get_by_role("link", name="API tokens")).to_have_attribute("href", "/tokens/")
    expect(nav.get_by_role("link", name="API tokens")).not_to_have_attribute("aria-current", "page")
    expect(nav.locator("[aria-current]")).to_have_count(1)
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    # Without an icon of its own a browser asks for /favicon.ico, a 404 that
    # it reports as a console error on the first page it shows.
    expect(page.locator("link[rel=icon]")).to_have_count(1)
    # The stylesheet loaded (served under its hashed name) and applies.
    assert page.evaluate("getComputedStyle(document.body).display") == "flex"
    page.wait_for_function("typeof window.htmx === 'object'")
    assert page.evaluate("typeof window.htmx") == "object"
    page.screenshot(path=OVERVIEW_SCREENSHOT, full_page=True)
    assert console_errors == []


def test_api_token_is_shown_once_works_and_stops_working_when_revoked(
    owner: User, live_server: LiveServer, page: Page, console_errors: list[str]
) -> None:
    log_in(page, owner)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="API tokens").click()
    expect(page.get_by_role("heading", level=1, name="API tokens")).to_be_visible()
    expect(page.get_by_text("No tokens yet.")).to_be_visible()

    page.get_by_label("Name").fill("Prometheus scrape")
    page.get_by_label("Scope").select_option("read")
    page.get_by_role("button", name="Create token").click()

    secret_box = page.locator("code.secret")
    expect(secret_box).to_have_text(re.compile(r"^phk_[A-Za-z0-9_-]{40,}$"))
    secret = secret_box.inner_text()
    row = page.get_by_role("row").filter(has_text="Prometheus scrape")
    expect(row).to_have_count(1)
    expect(row).to_contain_text(secret[:8] + "…")
    expect(row.get_by_role("button", name="Revoke")).to_be_visible()

    # Reloading shows the token's row but no secret, and creates no second
    # token (the form was answered with a redirect, so the reload is a GET).
    response = page.reload()
    assert response is not None
    assert response.request.method == "GET", "the form was answered without a redirect: reloading sent it again"
    expect(page.get_by_role("heading", level=1, name="API tokens")).to_be_visible()
    expect(page.locator("code.secret")).to_have_count(0)
    assert secret not in page.content()
    expect(page.get_by_role("row").filter(has_text=re.compile("phk_"))).to_have_count(1)
    expect(row).to_have_count(1)

    assert api_status(live_server, secret) == 200

    row.get_by_role("button", name="Revoke").click()
    expect(page.get_by_text("Token “Prometheus scrape” revoked.")).to_be_visible()
    expect(row).to_contain_text("Revoked")
    expect(row.get_by_role("button", name="Revoke")).to_have_count(0)
    assert api_status(live_server, secret) == 401
    assert console_errors == []


def test_api_docs_render_under_the_content_security_policy(owner: User, page: Page, console_errors: list[str]) -> None:
    log_in(page, owner)
    response = page.goto("/api/v1/docs/")
    assert response is not None
    assert response.status == 200
    assert "default-src 'self'" in (response.header_value("Content-Security-Policy") or "")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("PerfHub API", timeout=15_000)
    # The schema was fetched with the session and its operations listed.
    expect(page.locator(".swagger-ui .opblock").first).to_be_visible()
    assert console_errors == []


def test_log_out_returns_to_the_login_page(owner: User, page: Page, console_errors: list[str]) -> None:
    log_in(page, owner)
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login/$"))
    expect(page.get_by_role("heading", level=1, name="Log in to PerfHub")).to_be_visible()
    expect(page.get_by_role("button", name="Log out")).to_have_count(0)
    # The session is gone: the overview asks for a login again.
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))
    assert console_errors == []


def test_pages_fit_a_phone_screen(owner: User, phone_page: Page, console_errors: list[str]) -> None:
    no_overflow = "document.scrollingElement.scrollWidth <= window.innerWidth"
    phone_page.goto("/login/")
    expect(phone_page.get_by_role("button", name="Log in")).to_be_visible()
    assert phone_page.evaluate("window.innerWidth") == 375
    assert phone_page.evaluate(no_overflow)
    phone_page.screenshot(path=LOGIN_PHONE_SCREENSHOT, full_page=True)

    log_in(phone_page, owner)
    assert phone_page.evaluate(no_overflow), phone_page.evaluate(WIDER_THAN_THE_SCREEN)

    # The tokens table scrolls inside its own box rather than the page.
    api_token_create(user=owner, name="Grafana on the wall display", scope=ApiToken.Scope.READ)
    phone_page.goto("/tokens/")
    expect(phone_page.get_by_role("row").filter(has_text="Grafana on the wall display")).to_be_attached()
    assert phone_page.evaluate(no_overflow), phone_page.evaluate(WIDER_THAN_THE_SCREEN)
    assert console_errors == []
