"""Query insight: sampled requests' SQL, counted per view, with duplicates
and N+1 shapes flagged, in storage every worker sees."""

import subprocess
import time

import pytest
from django.contrib.auth.models import Group, User
from django.core.cache import caches
from django.test import Client
from django_redis.cache import RedisCache
from prometheus_client import REGISTRY
from pytest_django.fixtures import Settings

from apps.metrics import query_insight
from apps.metrics.query_insight import query_insight_views
from tests.helpers import BASE_DIR, PYTHON, subprocess_env

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.metrics.urls")]


def _counter(name: str, view: str) -> float:
    return REGISTRY.get_sample_value(f"perfhub_query_insight_{name}_total", {"view": view}) or 0.0


def _users(count: int) -> None:
    group = Group.objects.create(name="ops")
    for i in range(count):
        User.objects.create_user(username=f"user{i}").groups.add(group)


def _insight(view: str) -> dict[str, object]:
    rows = {row.view: row for row in query_insight_views()}
    assert view in rows, f"{view} not recorded; recorded: {sorted(rows)}"
    return vars(rows[view])


def test_nplusone_is_flagged_with_the_number_of_runs(settings: Settings) -> None:
    settings.QUERY_SAMPLE_RATE = 1.0
    settings.NPLUSONE_THRESHOLD = 5
    _users(7)
    shapes_before = _counter("nplusone", "test-nplusone")

    assert Client().get("/test/nplusone/").json() == {"users": 7}

    row = _insight("test-nplusone")
    assert row["sampled"] == 1
    assert row["queries"] == row["max_queries"] == 8  # the user list, then one per user
    assert row["nplusone"] == 1
    assert row["nplusone_count"] == 7
    assert "auth_user_groups" in str(row["nplusone_sql"])
    assert row["duplicates"] == 0
    assert _counter("nplusone", "test-nplusone") == shapes_before + 1


def test_as_many_parameter_sets_as_the_threshold_is_not_nplusone(settings: Settings) -> None:
    settings.QUERY_SAMPLE_RATE = 1.0
    settings.NPLUSONE_THRESHOLD = 5
    _users(5)

    Client().get("/test/nplusone/")

    row = _insight("test-nplusone")
    assert (row["queries"], row["nplusone"], row["nplusone_sql"]) == (6, 0, "")


def test_duplicates_are_flagged_without_parameter_values(settings: Settings) -> None:
    settings.QUERY_SAMPLE_RATE = 1.0
    duplicates_before = _counter("duplicate_queries", "test-duplicates")

    Client().get("/test/duplicates/")
    Client().get("/test/duplicates/")

    row = _insight("test-duplicates")
    assert row["sampled"] == 2
    assert row["queries"] == 6
    assert row["duplicates"] == 4  # two extra runs in each request
    assert row["duplicate_count"] == 3
    assert "auth_user" in str(row["duplicate_sql"])
    assert "s3cret-value" not in str(row["duplicate_sql"])
    assert _counter("duplicate_queries", "test-duplicates") == duplicates_before + 4


def test_sample_rate_zero_records_nothing(settings: Settings) -> None:
    settings.QUERY_SAMPLE_RATE = 0.0
    sampled_before = _counter("sampled_requests", "test-duplicates")

    Client().get("/test/duplicates/")

    assert query_insight_views() == []
    assert _counter("sampled_requests", "test-duplicates") == sampled_before


def test_ops_page_shows_each_view_with_its_example(settings: Settings, viewer_client: Client) -> None:
    settings.QUERY_SAMPLE_RATE = 1.0
    _users(7)
    Client().get("/test/nplusone/")
    Client().get("/test/duplicates/")

    response = viewer_client.get("/ops/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "Sampling 100% of requests" in html
    assert "<code>test-nplusone</code>" in html
    assert "1 N+1" in html
    # The viewer is an eighth user.
    assert f"run {User.objects.count()} times in one request" in html
    assert "<code>test-duplicates</code>" in html
    assert "run 3 times in one request" in html
    assert "s3cret-value" not in html


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PERFHUB_QUERY_SAMPLE_RATE", "1.5", "PERFHUB_QUERY_SAMPLE_RATE must be between 0.0 and 1.0"),
        ("PERFHUB_QUERY_SAMPLE_RATE", "often", "PERFHUB_QUERY_SAMPLE_RATE must be a number"),
        ("PERFHUB_NPLUSONE_THRESHOLD", "1", "PERFHUB_NPLUSONE_THRESHOLD must be at least 2"),
        ("PROMETHEUS_URL", "prometheus:9090", "PROMETHEUS_URL must start with http:// or https://"),
    ],
)
def test_bad_settings_stop_start_up(name: str, value: str, message: str) -> None:
    result = subprocess.run(
        [PYTHON, "manage.py", "check"],
        cwd=BASE_DIR,
        env=subprocess_env(**{name: value}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert message in result.stderr


def test_least_recently_seen_views_are_dropped_past_the_bound(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.QUERY_SAMPLE_RATE = 1.0
    monkeypatch.setattr(query_insight, "MAX_VIEWS", 2)
    client = Client()
    for path in ("/test/nplusone/", "/test/duplicates/", "/test/failing/", "/test/duplicates/"):
        client.get(path)
        time.sleep(0.01)  # distinct last-seen times

    assert [row.view for row in query_insight_views()] == ["test-duplicates", "test-failing"]
    assert _insight("test-duplicates")["sampled"] == 2
    backend = caches["default"]
    if isinstance(backend, RedisCache):
        # The dropped view's hash goes with it; the kept ones expire on their own.
        redis = backend.client.get_client()
        assert not redis.exists(backend.make_key("metrics:query_insight:view:test-nplusone"))
        assert redis.ttl(backend.make_key("metrics:query_insight:view:test-failing")) > 0
