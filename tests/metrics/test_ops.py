"""The ops overview read from this process's registry (no multiprocess
directory): who may see it, what it counts, and its API."""

import re
import time

import pytest
from django.test import Client
from prometheus_client import REGISTRY
from pytest_django import DjangoAssertNumQueries
from pytest_django.fixtures import Settings

from apps.metrics.ops import OpsOverview, ViewRow, histogram_quantile
from apps.metrics.selectors import ops_panels
from tests.helpers import free_port

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.metrics.urls")]


@pytest.fixture(autouse=True)
def _process_registry(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    settings.PROMETHEUS_URL = ""
    settings.QUERY_SAMPLE_RATE = 0.0


def _rows(overview: OpsOverview) -> dict[str, ViewRow]:
    return {row.view: row for row in overview.rows}


def test_anonymous_is_sent_to_login(client: Client) -> None:
    response = client.get("/ops/")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/ops/"


def test_outsider_is_forbidden(outsider_client: Client) -> None:
    assert outsider_client.get("/ops/").status_code == 403


def test_viewer_sees_the_page_and_its_live_fragment(viewer_client: Client) -> None:
    page = viewer_client.get("/ops/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'hx-trigger="every 5s, perfhub-visible"' in html
    assert "data-poll-while-visible" in html
    assert "perfhub/ops." in html  # the script that pauses polling while hidden
    # Strict CSP: every script is a file, no inline styles.
    assert all("src=" in attrs for attrs in re.findall(r"<script([^>]*)>", html))
    assert "style=" not in html.replace("stylesheet", "")

    fragment = viewer_client.get("/ops/", headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    body = fragment.content.decode()
    assert "Requests per view" in body
    assert "Query insight" in body
    assert "Off: set <code>PERFHUB_QUERY_SAMPLE_RATE</code>" in body
    assert "<html" not in body


def test_a_view_exception_is_counted_by_type_and_view_and_answered_with_a_500() -> None:
    def count(name: str, labels: dict[str, str]) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    by_type = ("django_http_exceptions_total_by_type_total", {"type": "LookupError"})
    by_view = ("django_http_exceptions_total_by_view_total", {"view": "test-raising"})
    responses = (
        "django_http_responses_total_by_status_view_method_total",
        {"status": "500", "view": "test-raising", "method": "GET"},
    )
    before = [count(*sample) for sample in (by_type, by_view, responses)]

    response = Client(raise_request_exception=False).get("/test/raising/")

    assert response.status_code == 500
    assert "Server-Timing" in response and "X-Request-ID" in response
    assert [count(*sample) for sample in (by_type, by_view, responses)] == [value + 1 for value in before]


def test_counts_rates_and_latency_of_the_views_hit(viewer_client: Client) -> None:
    anonymous = Client(raise_request_exception=False)
    viewer_client.get("/ops/")  # the first reading
    for _ in range(4):
        assert anonymous.get("/login/").status_code == 200
    assert viewer_client.get("/vitals/sites/no-such-site/").status_code == 404
    for _ in range(2):
        assert anonymous.get("/test/failing/").status_code == 503
    time.sleep(1.1)  # a rate needs two readings at least a second apart

    response = viewer_client.get("/ops/")

    overview: OpsOverview = response.context["overview"]
    assert overview.source == "local"
    assert overview.window_seconds is not None and overview.window_seconds >= 1.0
    rows = _rows(overview)
    login = rows["login"]
    assert login.requests == 4
    assert login.rate == pytest.approx(4 / overview.window_seconds)
    assert (login.errors_4xx, login.errors_5xx) == (0, 0)
    assert login.p50_ms is not None and 0 < login.p50_ms <= login.p95_ms <= login.p99_ms  # type: ignore[operator]
    assert login.db_ms is not None and login.cache_ms is not None
    assert (rows["vitals:site"].requests, rows["vitals:site"].errors_4xx) == (1, 1)
    assert (rows["test-failing"].requests, rows["test-failing"].errors_5xx) == (2, 2)
    # The first /ops/ request is in the window too; this one is still in flight.
    assert rows["metrics:ops"].requests == 1
    assert overview.in_flight == 1
    assert overview.workers == 1
    html = response.content.decode()
    assert "<code>login</code>" in html
    assert "Counts and rates over the last" in html
    assert "interpolation inside the latency histogram" in html


def test_views_with_sql_show_database_time(viewer_client: Client) -> None:
    viewer_client.get("/ops/")
    Client().get("/test/duplicates/")
    time.sleep(1.1)

    rows = _rows(viewer_client.get("/ops/").context["overview"])

    assert rows["test-duplicates"].db_ms is not None and rows["test-duplicates"].db_ms > 0


def test_page_reads_no_more_than_the_session_user(
    viewer_client: Client, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    viewer_client.get("/ops/")
    with django_assert_num_queries(1):
        assert viewer_client.get("/ops/", headers={"HX-Request": "true"}).status_code == 200


def test_unreachable_prometheus_is_a_panel_message(viewer_client: Client, settings: Settings) -> None:
    port = free_port()  # nothing listens there
    settings.PROMETHEUS_URL = f"http://127.0.0.1:{port}"

    response = viewer_client.get("/ops/")

    assert response.status_code == 200
    assert f"Prometheus at 127.0.0.1:{port} could not be queried" in response.content.decode()
    assert response.context["overview"].rows == []


def test_api_answers_with_a_read_token(client: Client, read_token: str) -> None:
    assert client.get("/api/v1/performance/ops").status_code == 401
    client.get("/login/")

    response = client.get("/api/v1/performance/ops", headers={"Authorization": f"Bearer {read_token}"})

    assert response.status_code == 200
    body = response.json()
    assert body["overview"]["source"] == "local"
    assert "login" in {row["view"] for row in body["overview"]["rows"]}
    assert body["query_insight"]["sample_rate"] == 0.0


def test_outsider_session_cannot_read_the_api(outsider_client: Client) -> None:
    assert outsider_client.get("/api/v1/performance/ops").status_code == 403


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0.5, 0.0175),  # rank 5 of 10: halfway into (0.01, 0.025]
        (0.2, 0.01),  # the end of the first bucket
        (0.1, 0.005),  # the first bucket starts at 0
        (0.99, 0.025),  # rank in +Inf: the highest finite bound
    ],
)
def test_histogram_quantile_interpolates_as_promql(q: float, expected: float) -> None:
    buckets = [(0.01, 2.0), (0.025, 8.0), (float("inf"), 10.0)]
    assert histogram_quantile(q, buckets) == pytest.approx(expected)


def test_histogram_quantile_of_nothing_is_none() -> None:
    assert histogram_quantile(0.5, [(0.01, 0.0), (float("inf"), 0.0)]) is None


def test_redis_down_leaves_panels_and_sampled_requests_working(settings: Settings) -> None:
    # A real Redis client pointed at a port where nothing listens.
    settings.CACHES = {
        "default": {
            "BACKEND": "apps.metrics.cache_backends.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
        }
    }
    settings.QUERY_SAMPLE_RATE = 1.0

    assert Client().get("/test/duplicates/").status_code == 200

    panels = ops_panels()
    assert panels.overview.error is None
    assert panels.overview.window_seconds is None  # no readings to compare with
    assert "test-duplicates" in {row.view for row in panels.overview.rows}
    assert panels.query_insight.views == []
    assert panels.query_insight.error is not None
    assert panels.query_insight.error.startswith("Query insight could not be read from the cache")
