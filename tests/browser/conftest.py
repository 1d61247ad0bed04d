"""Headless Chromium for the browser tests, through Playwright's sync API.

Chromium is Debian's (/usr/bin/chromium), never a Playwright download: the
machines have no network beyond the package registries.
"""

from collections.abc import Iterator

import pytest
from django.contrib.staticfiles.handlers import StaticFilesHandler
from playwright.sync_api import Browser, Page, Playwright, ViewportSize
from pytest_django.live_server_helper import LiveServer

from tests.browser_support import CHROMIUM, CHROMIUM_ARGS, CSP_LISTENER, playwright_running, record_console_errors
from tests.helpers import require

DESKTOP = ViewportSize(width=1280, height=800)
PHONE = ViewportSize(width=375, height=740)


class _StaticFilesToWhiteNoise(StaticFilesHandler):
    """Hands every request to the application, where WhiteNoise serves the
    static files from STATIC_ROOT as in production. pytest-django's default
    handler looks files up with the staticfiles finders, which know nothing
    of the manifest storage's hashed names: every stylesheet and script
    would be a 404."""

    def _should_handle(self, path: str) -> bool:
        return False


@pytest.fixture(scope="package")
def live_server() -> Iterator[LiveServer]:
    server = LiveServer("localhost", start=False)
    server.thread.static_handler = _StaticFilesToWhiteNoise
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    """Package-scoped rather than session-scoped: Playwright's sync API runs
    an asyncio event loop in this thread for as long as it is started, and
    Django refuses synchronous ORM calls while a loop runs. Stopping it when
    tests/browser ends keeps the loop away from every other test."""
    require(CHROMIUM.exists(), f"{CHROMIUM} is not installed (apt-get install chromium)")
    with pytest.MonkeyPatch.context() as patch:
        # The ORM calls made in this thread while Playwright runs (persona
        # fixtures, the transactional flush after each test) are plain
        # blocking calls outside any coroutine; Django sees Playwright's
        # loop and would refuse them. The live server answers in its own
        # thread and is unaffected.
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with playwright_running() as driver:
            yield driver


@pytest.fixture
def browser(playwright: Playwright) -> Iterator[Browser]:
    """A Chromium per test: a second to start, and a browser that crashes on
    a loaded machine takes one test down with it, not every one after it."""
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def console_errors() -> list[str]:
    """Console errors, uncaught exceptions and CSP violations of the test's
    pages; every browser test ends by asserting it is empty."""
    return []


def _new_page(browser: Browser, live_server: LiveServer, errors: list[str], viewport: ViewportSize) -> Iterator[Page]:
    context = browser.new_context(base_url=live_server.url, viewport=viewport)
    context.add_init_script(CSP_LISTENER)
    page = context.new_page()
    record_console_errors(page, errors)
    yield page
    context.close()


@pytest.fixture
def page(browser: Browser, live_server: LiveServer, console_errors: list[str]) -> Iterator[Page]:
    """A fresh browser context (no cookies) at desktop size."""
    yield from _new_page(browser, live_server, console_errors, DESKTOP)


@pytest.fixture
def phone_page(browser: Browser, live_server: LiveServer, console_errors: list[str]) -> Iterator[Page]:
    """A fresh browser context the size of a small phone."""
    yield from _new_page(browser, live_server, console_errors, PHONE)
