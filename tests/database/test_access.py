"""Who may see the database page and the stats API, and who may EXPLAIN."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.database.models import Snapshot, StatementStat, StatementText
from apps.database.services import snapshot_take
from tests.database.helpers import execute, flush_table_stats, require_statements

pytestmark = pytest.mark.django_db

STATS = "/api/v1/performance/database/stats"


def test_anonymous_visitors_are_sent_to_login_or_refused() -> None:
    client = Client()
    page = client.get("/database/")
    api = client.get(STATS)
    explain = client.post("/database/explain/", {"sql": "SELECT 1"})

    assert page.status_code == 302 and page["Location"].startswith("/login/")
    assert api.status_code in {401, 403}
    assert explain.status_code == 302 and explain["Location"].startswith("/login/")


def test_signed_in_outsiders_get_403(outsider_client: Client) -> None:
    assert outsider_client.get("/database/").status_code == 403
    assert outsider_client.get(STATS).status_code == 403
    assert outsider_client.post("/database/explain/", {"sql": "SELECT 1"}).status_code == 403


def test_staff_and_read_tokens_read_everything(viewer_client: Client, read_token: str) -> None:
    page = viewer_client.get("/database/")
    api = viewer_client.get(STATS)
    token = Client().get(STATS, {"window": "5m"}, HTTP_AUTHORIZATION=f"Bearer {read_token}")

    assert page.status_code == 200
    assert "<h1>Database</h1>" in page.content.decode()
    assert api.status_code == 200 and token.status_code == 200
    body = token.json()
    if connection.vendor == "postgresql":
        assert {
            "connections",
            "pool",
            "cache_hit_ratios",
            "slow_queries",
            "index_advice",
            "sizes",
            "vacuum",
            "long_running",
            "sequences",
        } <= set(body)
        assert body["slow_queries"]["window"] == "5m"
    else:
        assert body["pool"] == {"configured": False, "message": "no pool"}
        assert "slow_queries" in body["postgresql_only"]
        assert "sqlite" in body


def test_a_bad_window_is_a_400_naming_the_field(viewer_client: Client) -> None:
    response = viewer_client.get(STATS, {"window": "2d"})
    limit = viewer_client.get(STATS, {"limit": "0"})

    assert response.status_code == 400
    assert "window" in response.json()
    assert limit.status_code == 400 and "limit" in limit.json()


def test_the_page_says_when_its_window_is_unknown(viewer_client: Client) -> None:
    page = viewer_client.get("/database/", {"window": "2d"})
    panel_name = "slow_queries" if connection.vendor == "postgresql" else "sqlite"
    panel = viewer_client.get("/database/", {"window": "2d", "panel": panel_name}, HTTP_HX_REQUEST="true")

    assert page.status_code == 400
    text = page.content.decode()
    assert "Unknown window &#x27;2d&#x27;: choose one of 5m, 1h, 24h." in text
    # The page still shows its panels, over the default window.
    assert f'id="panel-{panel_name}"' in text
    assert panel.status_code == 400
    assert viewer_client.get("/database/", {"window": "24h"}).status_code == 200


def test_explain_is_for_administrators_only(viewer_client: Client, owner_client: Client) -> None:
    viewer = viewer_client.post("/database/explain/", {"sql": "SELECT 1", "timeout_ms": "1000"})
    owner = owner_client.post("/database/explain/", {"sql": "SELECT 1", "timeout_ms": "1000"})

    assert viewer.status_code == 403
    if connection.vendor == "postgresql":
        assert owner.status_code == 200
        assert "Result" in owner.content.decode()
    else:
        assert owner.status_code == 400
        assert "PostgreSQL only" in owner.content.decode()


def test_explain_needs_a_csrf_token(owner: object) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)  # type: ignore[arg-type]

    assert client.post("/database/explain/", {"sql": "SELECT 1"}).status_code == 403


def test_explain_only_answers_post(owner_client: Client) -> None:
    assert owner_client.get("/database/explain/").status_code == 405


@pytest.mark.parametrize(
    "panel", ["connections", "slow_queries", "activity", "indexes", "sizes", "vacuum", "sequences"]
)
def test_each_panel_refreshes_on_its_own(viewer_client: Client, panel: str) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL panels")
    response = viewer_client.get("/database/", {"panel": panel}, HTTP_HX_REQUEST="true")

    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith(f'<section class="panel" id="panel-{panel}"')
    assert 'hx-trigger="every 10s"' in html
    assert "<html" not in html


def test_the_page_has_no_inline_script_or_style(viewer_client: Client) -> None:
    html = viewer_client.get("/database/").content.decode()

    assert "<script>" not in html and "<style" not in html and " style=" not in html
    assert "database/database" in html  # its script and stylesheet are files


@pytest.mark.django_db(transaction=True)
# The computation's queries, not the short response cache's single lookup.
@override_settings(STATS_CACHE_SECONDS=0)
def test_the_stats_queries_do_not_grow_with_the_statements_or_tables(
    viewer_client: Client, scratch_tables: list[str]
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("snapshots are PostgreSQL's")
    snapshot_take()
    newest = snapshot_take()
    assert newest is not None

    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert viewer_client.get(STATS, {"window": "1h"}).status_code == 200
        return len(queries.captured_queries)

    before = count()
    StatementStat.objects.bulk_create(
        StatementStat(snapshot=newest, queryid=-n, calls=n, total_exec_time=n, rows=n) for n in range(1, 101)
    )
    StatementText.objects.bulk_create(StatementText(queryid=-n, query=f"SELECT {n}") for n in range(1, 101))
    # Three more tables for the missing-index advice, each with a statement naming it.
    for n in range(3):
        table = f"perfhub_count_demo_{n}"
        scratch_tables.append(table)
        execute(f"CREATE TABLE {table} (id bigint, customer integer)")
        execute(f"INSERT INTO {table} SELECT g, g % 100 FROM generate_series(1, 2000) g")  # noqa: S608
        for customer in range(12):
            execute(f"SELECT count(*) FROM {table} WHERE customer = %s", [customer])  # noqa: S608
    flush_table_stats()
    advised = {t["table"] for t in viewer_client.get(STATS).json()["index_advice"]["missing"]}
    assert {f"perfhub_count_demo_{n}" for n in range(3)} <= advised

    assert count() == before


@pytest.mark.django_db(transaction=True)
def test_the_slow_query_list_is_paginated(viewer_client: Client) -> None:
    require_statements()
    now = timezone.now()
    start = Snapshot.objects.create(taken_at=now - timedelta(minutes=6), has_statements=True)
    end = Snapshot.objects.create(taken_at=now, has_statements=True)
    for n in range(1, 26):
        StatementStat.objects.create(snapshot=start, queryid=n, calls=1, total_exec_time=1, rows=1)
        StatementStat.objects.create(snapshot=end, queryid=n, calls=1 + n, total_exec_time=1 + n, rows=1)
        StatementText.objects.create(queryid=n, query=f"SELECT {n} AS perfhub_page_marker")

    first = viewer_client.get("/database/", {"panel": "slow_queries", "window": "5m"}, HTTP_HX_REQUEST="true")
    second = viewer_client.get(
        "/database/", {"panel": "slow_queries", "window": "5m", "slow_queries_page": "2"}, HTTP_HX_REQUEST="true"
    )

    first_html, second_html = first.content.decode(), second.content.decode()
    assert "Page 1 of 2" in first_html and "slow_queries_page=2" in first_html
    assert "SELECT 25 AS perfhub_page_marker" in first_html  # the most time first
    assert "Page 2 of 2" in second_html
    assert "SELECT 1 AS perfhub_page_marker" in second_html
    assert "SELECT 25 AS perfhub_page_marker" not in second_html
    # The polled panel keeps its page.
    assert "slow_queries_page=2" in second_html.split(">", 1)[0]
