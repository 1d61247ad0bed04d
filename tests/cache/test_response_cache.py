"""Stats API responses cached for pollers: ETag and 304, the off switch, no
crossing of permission levels, and an unreachable cache."""

import time

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client, override_settings
from django.urls import path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.cache import response_cache
from apps.cache.response_cache import cache_response
from apps.core.models import ApiToken
from apps.core.services import api_token_revoke
from tests.cache.conftest import PrivateRedis, redis_cache_settings
from tests.helpers import free_port

pytestmark = pytest.mark.django_db

STATS = "/api/v1/performance/cache/stats"


def _token_client(secret: str) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {secret}")


def test_a_second_poll_is_a_hit_with_the_same_etag(read_token: str) -> None:
    client = _token_client(read_token)
    first = client.get(STATS)
    second = client.get(STATS)

    assert first.status_code == second.status_code == 200
    assert (first["X-PerfHub-Cache"], second["X-PerfHub-Cache"]) == ("miss", "hit")
    assert second.content == first.content
    assert second["ETag"] == first["ETag"]
    assert first["ETag"].startswith('"') and not first["ETag"].startswith("W/")
    assert second["Cache-Control"] == "private, max-age=5"
    assert second["Content-Type"] == "application/json"


def test_if_none_match_gets_304_with_no_body(read_token: str) -> None:
    client = _token_client(read_token)
    etag = client.get(STATS)["ETag"]

    response = client.get(STATS, HTTP_IF_NONE_MATCH=etag)

    assert response.status_code == 304
    assert response.content == b""
    assert response["ETag"] == etag
    assert response["X-PerfHub-Cache"] == "hit"
    assert client.get(STATS, HTTP_IF_NONE_MATCH='"something-else"').status_code == 200


def test_the_query_is_normalized_and_part_of_the_key(read_token: str) -> None:
    client = _token_client(read_token)
    assert client.get(f"{STATS}?window=1m&format=json")["X-PerfHub-Cache"] == "miss"
    assert client.get(f"{STATS}?format=json&window=1m")["X-PerfHub-Cache"] == "hit"
    fifteen = client.get(f"{STATS}?window=15m")
    assert fifteen["X-PerfHub-Cache"] == "miss"
    assert fifteen.json()["window"] == "15m"


@override_settings(STATS_CACHE_SECONDS=0)
def test_zero_seconds_turns_the_cache_off(read_token: str) -> None:
    client = _token_client(read_token)
    first, second = client.get(STATS), client.get(STATS)
    assert (first["X-PerfHub-Cache"], second["X-PerfHub-Cache"]) == ("off", "off")
    assert first["Cache-Control"] == "private, no-cache"
    # Computed each time: the timestamp moves on.
    assert first.json()["generated_at"] != second.json()["generated_at"]


def test_bodies_never_cross_permission_levels(
    read_token: str, admin_token: str, viewer_client: Client, owner_client: Client, outsider_client: Client
) -> None:
    readers = [_token_client(read_token), _token_client(admin_token), viewer_client, owner_client]
    # Each level computes its own body the first time, even right after
    # another level cached one for the same URL.
    assert [client.get(STATS)["X-PerfHub-Cache"] for client in readers] == ["miss"] * 4
    assert [client.get(STATS)["X-PerfHub-Cache"] for client in readers] == ["hit"] * 4
    # Permission is checked before the cache is consulted.
    assert Client().get(STATS).status_code == 401
    assert outsider_client.get(STATS).status_code == 403
    assert _token_client("phk_not-a-token").get(STATS).status_code == 401


def test_a_viewer_shares_the_staff_entry(viewer: User, read_token: str) -> None:
    other_staff = User.objects.create_user("second-viewer", is_staff=True)
    first, second = Client(), Client()
    first.force_login(viewer)
    second.force_login(other_staff)
    assert first.get(STATS)["X-PerfHub-Cache"] == "miss"
    assert second.get(STATS)["X-PerfHub-Cache"] == "hit"


def test_a_bad_window_is_a_400_naming_the_field_and_never_cached(read_token: str) -> None:
    client = _token_client(read_token)
    for _ in range(2):
        response = client.get(f"{STATS}?window=7m")
        assert response.status_code == 400
        assert "window" in response.json()
        assert "X-PerfHub-Cache" not in response


def test_the_browsable_api_is_not_cached(viewer_client: Client) -> None:
    response = viewer_client.get(STATS, HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert response["X-PerfHub-Cache"] == "bypass"
    assert "ETag" not in response or response["Content-Type"].startswith("text/html")


def test_an_unreachable_cache_serves_uncached(read_token: str) -> None:
    with override_settings(CACHES=redis_cache_settings(f"redis://127.0.0.1:{free_port()}/0")):
        response = _token_client(read_token).get(STATS)
    assert response.status_code == 200
    assert response["X-PerfHub-Cache"] == "error"
    assert response.json()["redis_error"].startswith("Redis is unreachable")


def test_a_redis_stopped_between_polls_still_answers(private_redis: PrivateRedis, read_token: str) -> None:
    client = _token_client(read_token)
    assert client.get(STATS)["X-PerfHub-Cache"] == "miss"
    assert client.get(STATS)["X-PerfHub-Cache"] == "hit"
    private_redis.stop()
    response = client.get(STATS)
    assert response.status_code == 200
    assert response["X-PerfHub-Cache"] == "error"


class _Unhealthy(APIView):
    calls = 0

    @cache_response
    def get(self, request: Request) -> Response:
        type(self).calls += 1
        return Response({"status": "unhealthy", "calls": type(self).calls}, status=503)


urlpatterns = [path("unhealthy", _Unhealthy.as_view())]


@override_settings(ROOT_URLCONF=__name__)
def test_one_line_wraps_any_stats_view_and_keeps_its_503(read_token: str) -> None:
    client = _token_client(read_token)
    first, second = client.get("/unhealthy"), client.get("/unhealthy")
    assert first.status_code == second.status_code == 503
    assert second["X-PerfHub-Cache"] == "hit"
    assert second.json() == {"status": "unhealthy", "calls": 1}
    # Conditional answers are for 2xx bodies only (RFC 9110): never a 304.
    conditional = client.get("/unhealthy", HTTP_IF_NONE_MATCH=first["ETag"])
    assert conditional.status_code == 503
    assert conditional.json() == {"status": "unhealthy", "calls": 1}


def test_a_cached_body_or_304_never_reaches_a_refused_client(
    read_token: str, viewer_client: Client, outsider_client: Client
) -> None:
    cached = _token_client(read_token).get(STATS)
    etag = cached["ETag"]
    assert _token_client(read_token).get(STATS, HTTP_IF_NONE_MATCH=etag).status_code == 304
    # A staff session's body is cached too, under the session class.
    assert [viewer_client.get(STATS)["X-PerfHub-Cache"] for _ in range(2)] == ["miss", "hit"]

    refusals = {
        "anonymous": Client().get(STATS, HTTP_IF_NONE_MATCH=etag),
        "unknown token": _token_client("phk_not-a-token").get(STATS, HTTP_IF_NONE_MATCH=etag),
        "not staff": outsider_client.get(STATS, HTTP_IF_NONE_MATCH=etag),
    }
    api_token_revoke(token=ApiToken.objects.get())
    refusals["revoked token"] = _token_client(read_token).get(STATS, HTTP_IF_NONE_MATCH=etag)

    assert {who: r.status_code for who, r in refusals.items()} == {
        "anonymous": 401,
        "unknown token": 401,
        "not staff": 403,
        "revoked token": 401,
    }
    for response in refusals.values():
        assert "X-PerfHub-Cache" not in response
        assert "ETag" not in response
        assert set(response.json()) == {"detail"}


def test_a_current_etag_is_answered_from_the_process_memory(read_token: str) -> None:
    client = _token_client(read_token)
    etag = client.get(STATS)["ETag"]
    cache.clear()  # the shared entry is gone: only this process's memory knows the ETag

    not_modified = client.get(STATS, HTTP_IF_NONE_MATCH=etag)
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert (not_modified["ETag"], not_modified["X-PerfHub-Cache"]) == (etag, "hit")
    assert not_modified["Cache-Control"] == "private, max-age=5"
    # Without If-None-Match the body comes from the shared cache, here empty.
    assert client.get(STATS)["X-PerfHub-Cache"] == "miss"


def test_a_redis_stopped_still_confirms_a_current_etag(private_redis: PrivateRedis, read_token: str) -> None:
    client = _token_client(read_token)
    etag = client.get(STATS)["ETag"]
    private_redis.stop()
    assert client.get(STATS, HTTP_IF_NONE_MATCH=etag).status_code == 304
    assert client.get(STATS)["X-PerfHub-Cache"] == "error"


@override_settings(STATS_CACHE_SECONDS=1)
def test_the_memory_ends_with_the_shared_entry(read_token: str) -> None:
    client = _token_client(read_token)
    first = client.get(STATS)
    assert client.get(STATS, HTTP_IF_NONE_MATCH=first["ETag"]).status_code == 304
    time.sleep(1.1)

    expired = client.get(STATS, HTTP_IF_NONE_MATCH=first["ETag"])
    assert expired.status_code == 200
    assert expired["X-PerfHub-Cache"] == "miss"
    assert expired["ETag"] != first["ETag"]


def test_an_etag_from_one_permission_level_is_not_confirmed_for_another(read_token: str, viewer_client: Client) -> None:
    etag = _token_client(read_token).get(STATS)["ETag"]
    # A staff session has an entry of its own: its body is computed afresh.
    answer = viewer_client.get(STATS, HTTP_IF_NONE_MATCH=etag)
    assert answer.status_code == 200
    assert answer["X-PerfHub-Cache"] == "miss"


def test_the_etag_memory_is_capped(read_token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(response_cache, "MAX_REMEMBERED_ETAGS", 3)
    client = _token_client(read_token)
    for window in ("1m", "5m", "15m", "1h", "1m"):
        assert client.get(f"{STATS}?window={window}").status_code == 200
        assert len(response_cache._current_etags) <= 3
