"""The few seconds' cache of API token lookups (apps/core/token_cache.py):
it spares the database, and every change that ends a token's access still
takes effect on the very next request."""

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.cache import caches
from django.core.cache.backends.base import BaseCache
from django.test import Client, override_settings
from django.utils import timezone

from apps.core.models import ApiToken
from apps.core.selectors import api_token_for_secret
from apps.core.services import api_token_create, api_token_revoke
from apps.core.token_cache import TOKEN_CACHE_SECONDS, TOMBSTONE, api_token_remember, token_cache_key
from tests.cache.conftest import running_private_redis
from tests.helpers import PASSWORD, bearer, redis_configured

pytestmark = pytest.mark.django_db

WHOAMI = "/api/v1/whoami"
STATS = "/api/v1/performance/cache/stats"
RESET = "/api/v1/performance/reset-circuit-breakers"


def entry_for(cache: BaseCache, secret: str) -> object:
    return cache.get(token_cache_key(ApiToken.digest_of(secret)))


@pytest.fixture
def shared_cache() -> Iterator[BaseCache]:
    """A cache all processes share, as in production: the configured Redis
    on a services run, a redis-server of the test's own on the embedded
    default (SQLite)."""
    if redis_configured():
        yield caches["default"]
        return
    with running_private_redis():
        yield caches["default"]


def test_a_second_request_authenticates_without_the_database(
    shared_cache: BaseCache, read_token: str, viewer: User, django_assert_num_queries
) -> None:
    client = Client()
    first = client.get(WHOAMI, headers=bearer(read_token))
    assert first.status_code == 200

    with django_assert_num_queries(0):
        second = client.get(WHOAMI, headers=bearer(read_token))
    assert second.status_code == 200
    assert second.json()["username"] == viewer.username
    assert second.json()["token"] == {"name": "read", "scope": "read"}
    assert (second.json()["is_staff"], second.json()["is_superuser"]) == (True, False)


def test_a_cached_stats_answer_touches_no_database(
    shared_cache: BaseCache, read_token: str, django_assert_num_queries
) -> None:
    client = Client()
    etag = client.get(STATS, headers=bearer(read_token))["ETag"]
    with django_assert_num_queries(0):
        response = client.get(STATS, headers={**bearer(read_token), "If-None-Match": etag})
    assert response.status_code == 304
    assert response["X-PerfHub-Cache"] == "hit"


def test_the_entry_keeps_no_password_and_lasts_seconds(shared_cache: BaseCache, read_token: str) -> None:
    assert Client().get(WHOAMI, headers=bearer(read_token)).status_code == 200
    entry = entry_for(shared_cache, read_token)
    assert isinstance(entry, dict)
    assert set(entry["user"]) == {"id", "username", "is_active", "is_staff", "is_superuser"}
    assert read_token not in repr(entry)
    assert 0 < shared_cache.ttl(token_cache_key(ApiToken.digest_of(read_token))) <= TOKEN_CACHE_SECONDS  # type: ignore[attr-defined]


def test_a_cached_owner_loads_its_other_fields_from_the_database(shared_cache: BaseCache, read_token: str) -> None:
    api_token_for_secret(secret=read_token)
    cached = api_token_for_secret(secret=read_token)
    assert cached is not None
    assert cached.user.get_deferred_fields() >= {"password", "email"}
    assert cached.user.email == "viewer@example.com"


def test_revoking_on_the_tokens_page_takes_effect_at_once(
    shared_cache: BaseCache, viewer_client: Client, read_token: str
) -> None:
    client = Client()
    assert client.get(STATS, headers=bearer(read_token)).status_code == 200
    assert client.get(STATS, headers=bearer(read_token))["X-PerfHub-Cache"] == "hit"
    token = ApiToken.objects.get()

    assert viewer_client.post(f"/tokens/{token.pk}/revoke/").status_code == 302

    refused = client.get(STATS, headers=bearer(read_token))
    assert refused.status_code == 401
    assert "X-PerfHub-Cache" not in refused
    assert client.get(WHOAMI, headers=bearer(read_token)).status_code == 401


def test_revoking_in_the_admin_takes_effect_at_once(
    shared_cache: BaseCache, owner_client: Client, read_token: str
) -> None:
    assert Client().get(WHOAMI, headers=bearer(read_token)).status_code == 200
    token = ApiToken.objects.get()
    owner_client.post("/admin/core/apitoken/", {"action": "revoke", "_selected_action": [token.pk]})
    assert Client().get(WHOAMI, headers=bearer(read_token)).status_code == 401


def test_deleting_a_token_or_its_owner_takes_effect_at_once(
    shared_cache: BaseCache, read_token: str, viewer: User, owner: User
) -> None:
    _, other = api_token_create(user=viewer, name="second", scope=ApiToken.Scope.READ)
    _, owners = api_token_create(user=owner, name="owner's", scope=ApiToken.Scope.READ)
    for secret in (read_token, other, owners):
        assert Client().get(WHOAMI, headers=bearer(secret)).status_code == 200

    ApiToken.objects.get(name="owner's").delete()
    assert Client().get(WHOAMI, headers=bearer(owners)).status_code == 401

    viewer.delete()
    assert Client().get(WHOAMI, headers=bearer(read_token)).status_code == 401
    assert Client().get(WHOAMI, headers=bearer(other)).status_code == 401


@pytest.mark.parametrize("change", ["is_staff", "is_active"])
def test_an_owner_losing_access_takes_effect_at_once(
    shared_cache: BaseCache, read_token: str, viewer: User, change: str
) -> None:
    assert Client().get(WHOAMI, headers=bearer(read_token)).status_code == 200
    setattr(viewer, change, False)
    viewer.save()
    assert Client().get(WHOAMI, headers=bearer(read_token)).status_code == 401


def test_an_administrator_demoted_loses_the_admin_token_at_once(
    shared_cache: BaseCache, admin_token: str, owner: User
) -> None:
    client = Client()
    assert client.post(RESET, headers=bearer(admin_token), content_type="application/json").status_code == 200
    owner.is_superuser = False
    owner.save()
    assert client.post(RESET, headers=bearer(admin_token), content_type="application/json").status_code == 403


def test_a_read_token_never_passes_for_an_admin_one(shared_cache: BaseCache, read_token: str) -> None:
    client = Client()
    for _ in range(2):  # the second one authenticates from the cache
        refused = client.post(RESET, headers=bearer(read_token), content_type="application/json")
        assert refused.status_code == 403
    assert isinstance(entry_for(shared_cache, read_token), dict)


def test_signing_in_keeps_the_entry(shared_cache: BaseCache, read_token: str, viewer: User) -> None:
    assert Client().get(WHOAMI, headers=bearer(read_token)).status_code == 200
    assert Client().login(username=viewer.username, password=PASSWORD)
    assert isinstance(entry_for(shared_cache, read_token), dict)


def test_a_lookup_racing_a_revocation_cannot_bring_the_token_back(shared_cache: BaseCache, read_token: str) -> None:
    # A request read the token from the database just before the revocation
    # committed, and caches it just after.
    read_before = ApiToken.objects.select_related("user").get()
    api_token_revoke(token=ApiToken.objects.get())
    api_token_remember(read_before)

    assert entry_for(shared_cache, read_token) == TOMBSTONE
    assert Client().get(WHOAMI, headers=bearer(read_token)).status_code == 401


def test_unknown_and_revoked_secrets_are_never_cached(
    shared_cache: BaseCache, read_token: str, django_assert_num_queries
) -> None:
    unknown = ApiToken.generate_secret()
    api_token_revoke(token=ApiToken.objects.get())
    for secret in (unknown, unknown, read_token, read_token):
        with django_assert_num_queries(1):
            assert Client().get(WHOAMI, headers=bearer(secret)).status_code == 401
    assert entry_for(shared_cache, unknown) is None


def test_last_used_is_still_written_once_a_minute(
    shared_cache: BaseCache, read_token: str, monkeypatch: pytest.MonkeyPatch, django_assert_num_queries
) -> None:
    client = Client()
    with django_assert_num_queries(2):  # the lookup, then the last_used_at write
        client.get(WHOAMI, headers=bearer(read_token))
    first_use = ApiToken.objects.get().last_used_at
    assert first_use is not None

    # The cached entry still says "never used": no write for all that.
    with django_assert_num_queries(0):
        for _ in range(5):
            client.get(WHOAMI, headers=bearer(read_token))

    a_minute_later = first_use + timedelta(seconds=61)
    monkeypatch.setattr(timezone, "now", lambda: a_minute_later)
    with django_assert_num_queries(1):  # the write; the token still comes from the cache
        client.get(WHOAMI, headers=bearer(read_token))
        client.get(WHOAMI, headers=bearer(read_token))
    assert ApiToken.objects.get().last_used_at == a_minute_later


@override_settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}})
def test_the_local_memory_cache_keeps_no_tokens(read_token: str, django_assert_num_queries) -> None:
    # Each process has its own: a revocation could not reach the others.
    client = Client()
    client.get(WHOAMI, headers=bearer(read_token))
    for _ in range(2):
        with django_assert_num_queries(1):
            assert client.get(WHOAMI, headers=bearer(read_token)).status_code == 200
    assert entry_for(caches["default"], read_token) is None
