"""Shared fixtures: personas (as in healthchecks' hc/test.py), tokens, and the
switch that turns a skip for a missing service into a failure in CI."""

import os

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.management import call_command
from django.test import Client

from apps.core.models import ApiToken
from apps.core.ratelimit import local_counts
from apps.core.services import api_token_create
from tests.helpers import PASSWORD, postgres_configured, redis_configured


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PERFHUB_REQUIRE_SERVICES") == "1" and not (postgres_configured() and redis_configured()):
        raise pytest.UsageError(
            "PERFHUB_REQUIRE_SERVICES=1 but DATABASE_URL/REDIS_URL do not point at PostgreSQL and Redis."
        )


@pytest.fixture(scope="session", autouse=True)
def _collected_static(django_db_setup: None) -> None:
    # Templates use the hashed names of the manifest storage, which exist
    # only after collectstatic.
    call_command("collectstatic", "--noinput", verbosity=0)


@pytest.fixture(autouse=True)
def _empty_cache() -> None:
    cache.clear()
    # The rate limits' counters were in the cache: this process's view of
    # them goes too.
    local_counts.forget()


def _user(username: str, *, staff: bool = False, superuser: bool = False) -> User:
    return User.objects.create_user(
        username=username, email=f"{username}@example.com", password=PASSWORD, is_staff=staff, is_superuser=superuser
    )


@pytest.fixture
def owner(db: None) -> User:
    """An administrator: staff and superuser."""
    return _user("owner", staff=True, superuser=True)


@pytest.fixture
def viewer(db: None) -> User:
    """Staff, not a superuser: reads everything, changes nothing."""
    return _user("viewer", staff=True)


@pytest.fixture
def outsider(db: None) -> User:
    """Signed in, but not staff."""
    return _user("outsider")


def _client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def owner_client(owner: User) -> Client:
    return _client_for(owner)


@pytest.fixture
def viewer_client(viewer: User) -> Client:
    return _client_for(viewer)


@pytest.fixture
def outsider_client(outsider: User) -> Client:
    return _client_for(outsider)


@pytest.fixture
def read_token(viewer: User) -> str:
    return api_token_create(user=viewer, name="read", scope=ApiToken.Scope.READ)[1]


@pytest.fixture
def admin_token(owner: User) -> str:
    return api_token_create(user=owner, name="admin", scope=ApiToken.Scope.ADMIN)[1]
