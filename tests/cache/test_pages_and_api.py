"""Who may see the cache statistics, and what the page and API show on this
run's cache (Redis or the local-memory default)."""

import io
import re

import pytest
from django.core.cache import cache, caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.management import call_command
from django.test import Client
from pytest_django import DjangoAssertNumQueries

pytestmark = pytest.mark.django_db

STATS = "/api/v1/performance/cache/stats"


def test_the_api_is_for_staff_and_tokens(outsider_client: Client, viewer_client: Client, read_token: str) -> None:
    anonymous = Client().get(STATS)
    assert anonymous.status_code == 401
    assert anonymous["WWW-Authenticate"] == 'Bearer realm="api"'
    assert outsider_client.get(STATS).status_code == 403
    assert viewer_client.get(STATS).status_code == 200
    assert Client().get(STATS, HTTP_AUTHORIZATION=f"Bearer {read_token}").status_code == 200


def test_the_page_is_for_staff(outsider_client: Client, viewer_client: Client) -> None:
    anonymous = Client().get("/cache/")
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/login/")
    assert outsider_client.get("/cache/").status_code == 403
    assert viewer_client.get("/cache/").status_code == 200


def test_the_api_reads_without_sql_beyond_the_token(
    read_token: str, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    client = Client(HTTP_AUTHORIZATION=f"Bearer {read_token}")
    client.get(STATS)  # records the token's last use, once a minute
    cache.clear()
    with django_assert_num_queries(1):  # the token lookup
        assert client.get(STATS)["X-PerfHub-Cache"] == "miss"


def test_the_api_shows_this_backend(read_token: str) -> None:
    cache.set("perfhub:vitals:site:k", 1)
    cache.get("perfhub:vitals:site:k")
    body = Client(HTTP_AUTHORIZATION=f"Bearer {read_token}").get(f"{STATS}?window=1h").json()
    assert body["window"] == "1h" and body["window_seconds"] == 3600
    row = next(row for row in body["prefixes"] if row["prefix"] == "perfhub:vitals")
    assert row["hits"] >= 1
    if isinstance(caches["default"], LocMemCache):
        assert body["backend"] == "locmem" and body["redis"] is None
        # The key just set, at least (the page's own entries may add more).
        assert body["local_memory"]["entries"] >= 1
        assert body["local_memory"]["max_entries"] == 300
        assert "each web worker" in body["local_memory"]["note"]
    else:
        assert body["backend"] == "redis" and body["local_memory"] is None
        assert body["redis"]["memory_used_bytes"] > 0
        assert body["redis"]["collecting"] is True


def test_the_page_renders_under_the_strict_csp_and_polls(viewer_client: Client) -> None:
    cache.get("perfhub:worker:heartbeat")
    response = viewer_client.get("/cache/?window=15m")
    html = response.content.decode()
    assert response.status_code == 200
    assert "unsafe-inline" not in response["Content-Security-Policy"]
    for attrs, body in re.findall(r"<script([^>]*)>(.*?)</script>", html, flags=re.S):
        assert "src=" in attrs and not body.strip()
    assert "style=" not in html.replace("stylesheet", "")
    assert 'hx-trigger="every 5s, visibilitychange from:document"' in html
    assert 'href="/cache/?window=1h" hx-get="/cache/?window=1h"' in html
    assert 'aria-current="true">15m</a>' in html
    assert "<code>perfhub:worker</code>" in html
    assert ("Local-memory cache" in html) == isinstance(caches["default"], LocMemCache)


def test_htmx_polls_get_the_fragment_only(viewer_client: Client) -> None:
    response = viewer_client.get("/cache/?window=1m", HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith('<div id="cache-stats"')
    assert "<html" not in html


def test_an_unknown_window_on_the_page_says_so(viewer_client: Client) -> None:
    response = viewer_client.get("/cache/?window=2d")
    assert response.status_code == 400
    assert "Unknown window" in response.content.decode()


def test_the_navigation_links_the_cache_page(viewer_client: Client) -> None:
    assert '<a href="/cache/"' in viewer_client.get("/").content.decode()


def test_the_snapshot_command_explains_itself_without_redis() -> None:
    out = io.StringIO()
    call_command("cache_snapshot", stdout=out)
    if isinstance(caches["default"], LocMemCache):
        assert out.getvalue().strip() == "The cache is not Redis: nothing to snapshot."
    else:
        assert "stored" in out.getvalue()
