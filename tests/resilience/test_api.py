"""The health, resilience and reset endpoints and the resilience page:
permissions for every persona, CSRF, audit, and what they report."""

import json

import pytest
from django.contrib.auth.models import User
from django.test import Client

from apps.resilience.breakers import CLOSED, OPEN, breaker
from apps.resilience.models import BreakerReset
from tests.helpers import bearer, redis_configured

pytestmark = pytest.mark.django_db

HEALTH = "/api/v1/performance/health"
RESILIENCE = "/api/v1/performance/resilience"
RESET = "/api/v1/performance/reset-circuit-breakers"


@pytest.mark.parametrize("url", [HEALTH, RESILIENCE])
def test_reads_are_refused_to_anonymous_and_outsiders(url: str, outsider_client: Client) -> None:
    assert Client().get(url).status_code in (401, 403)
    assert outsider_client.get(url).status_code == 403


@pytest.mark.parametrize("url", [HEALTH, RESILIENCE])
def test_reads_are_allowed_to_staff_and_tokens(
    url: str, viewer_client: Client, owner_client: Client, read_token: str, admin_token: str
) -> None:
    for response in (
        viewer_client.get(url),
        owner_client.get(url),
        Client().get(url, headers=bearer(read_token)),
        Client().get(url, headers=bearer(admin_token)),
    ):
        assert response.status_code == 200, response.content


def test_health_answers_each_check(viewer_client: Client) -> None:
    response = viewer_client.get(HEALTH)
    body = response.json()
    assert response["Cache-Control"] == "no-store"
    assert body["status"] in ("ok", "degraded")
    checks = {c["name"]: c for c in body["checks"]}
    assert checks["database"] == {**checks["database"], "status": "ok", "message": "reachable"}
    assert set(checks["backup"]) == {"name", "status", "latency_ms", "message"}


def test_health_is_503_naming_the_failing_check(viewer_client: Client, settings: object) -> None:
    settings.HEALTH_DISK_DOWN_PERCENT = 100  # type: ignore[attr-defined]
    settings.HEALTH_DISK_DEGRADED_PERCENT = 100  # type: ignore[attr-defined]
    response = viewer_client.get(HEALTH)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "down"
    assert [c["name"] for c in body["checks"] if c["status"] == "down"] == ["disk"]


def test_resilience_reports_breakers_and_modes(read_token: str, django_assert_num_queries: object) -> None:
    breaker("redis-stream").open("test: XADD refused")
    with django_assert_num_queries(2):  # type: ignore[operator]  # the token: lookup, last-used stamp
        response = Client().get(RESILIENCE, headers=bearer(read_token))
    body = response.json()
    breakers = {b["name"]: b for b in body["breakers"]}
    assert {"redis-cache", "redis-stream", "database", "prometheus", "webhooks"} <= set(breakers)
    stream = breakers["redis-stream"]
    assert stream["state"] == OPEN
    assert stream["last_change_reason"] == "test: XADD refused"
    assert stream["last_change"] is not None
    assert set(stream) >= {"failure_rate", "slow_call_rate", "calls", "failures", "slow_calls", "config"}
    modes = {m["name"]: m for m in body["degradation_modes"]}
    assert modes["database-down"]["active"] is False
    if redis_configured():
        assert modes["redis-down"]["active"] is True
        assert "redis-stream open: test: XADD refused" in modes["redis-down"]["reason"]
    else:
        assert "redis-down" not in modes  # no Redis, no Redis mode


@pytest.mark.parametrize("persona", ["anonymous", "outsider", "viewer", "read_token"])
def test_reset_is_refused_to_non_admins(persona: str, request: pytest.FixtureRequest) -> None:
    breaker("webhooks").open("test")
    extra: dict[str, str] = {}
    if persona == "anonymous":
        client = Client()
    elif persona == "read_token":
        client, extra = Client(), bearer(request.getfixturevalue("read_token"))
    else:
        client = request.getfixturevalue(f"{persona}_client")
    response = client.post(RESET, data={}, content_type="application/json", headers=extra)
    assert response.status_code in (401, 403)
    assert breaker("webhooks").current_state == OPEN
    assert not BreakerReset.objects.exists()


def test_admin_token_resets_named_breakers_and_is_audited(admin_token: str, owner: User) -> None:
    breaker("webhooks").open("test")
    breaker("prometheus").open("test")
    response = Client().post(
        RESET, data=json.dumps({"breakers": ["webhooks"]}), content_type="application/json", headers=bearer(admin_token)
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["reset"] == ["webhooks"]
    assert body["breakers"][0]["state"] == CLOSED
    assert body["breakers"][0]["last_change_reason"] == "reset by owner"
    assert breaker("webhooks").current_state == CLOSED
    assert breaker("prometheus").current_state == OPEN  # not named, not touched
    audit = BreakerReset.objects.get()
    assert (audit.user, audit.username, audit.breakers, audit.via) == (owner, "owner", ["webhooks"], "api")


def test_owner_session_resets_all_with_the_csrf_token(owner: User) -> None:
    breaker("database").open("test")
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    # Without the token: refused.
    refused = client.post(RESET, data="{}", content_type="application/json")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    assert breaker("database").current_state == OPEN
    # With it (as htmx sends it, from the page's hx-headers).
    client.get("/resilience/")
    token = client.cookies["csrftoken"].value
    response = client.post(RESET, data="{}", content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200, response.content
    assert breaker("database").current_state == CLOSED
    assert BreakerReset.objects.get().breakers == sorted(b["name"] for b in response.json()["breakers"])


def test_unknown_breaker_names_are_a_400_naming_them(admin_token: str) -> None:
    breaker("webhooks").open("test")
    response = Client().post(
        RESET,
        data=json.dumps({"breakers": ["webhooks", "nope", "also-nope"]}),
        content_type="application/json",
        headers=bearer(admin_token),
    )
    assert response.status_code == 400
    body = response.json()
    assert body["field"] == "breakers"
    assert body["unknown"] == ["nope", "also-nope"]
    assert "nope, also-nope" in body["error"]
    assert breaker("webhooks").current_state == OPEN  # nothing reset
    assert not BreakerReset.objects.exists()


def test_a_malformed_reset_body_is_a_400_naming_the_field(admin_token: str) -> None:
    response = Client().post(
        RESET, data=json.dumps({"breakers": "webhooks"}), content_type="application/json", headers=bearer(admin_token)
    )
    assert response.status_code == 400
    assert "breakers" in response.json()


# --- The page ---------------------------------------------------------------------


def test_the_page_is_for_staff(outsider_client: Client) -> None:
    assert Client().get("/resilience/").status_code == 302
    assert outsider_client.get("/resilience/").status_code == 403


def test_the_page_shows_health_breakers_modes_and_resets(viewer_client: Client, admin_token: str) -> None:
    breaker("redis-stream").open("test: XADD refused")
    Client().post(
        RESET, data=json.dumps({"breakers": ["webhooks"]}), content_type="application/json", headers=bearer(admin_token)
    )
    response = viewer_client.get("/resilience/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "Health:" in html and "migrations" in html
    assert "redis-stream" in html and "test: XADD refused" in html
    assert "Recent resets" in html and "owner" in html
    assert 'hx-trigger="every 5s"' in html
    # A viewer sees no reset buttons.
    assert "/resilience/breakers/" not in html
    if redis_configured():
        # The banner, on every page, says what is degraded and why.
        assert "Redis unavailable" in viewer_client.get("/").content.decode()


def test_the_htmx_poll_gets_only_the_live_fragment(viewer_client: Client) -> None:
    response = viewer_client.get("/resilience/", HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="resilience-live"')
    assert "<html" not in html and "Recent resets" not in html


def test_the_owner_resets_one_breaker_from_the_page(owner: User) -> None:
    breaker("prometheus").open("test")
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    page = client.get("/resilience/").content.decode()
    assert 'action="/resilience/breakers/prometheus/reset/"' in page
    assert client.post("/resilience/breakers/prometheus/reset/").status_code == 403  # no CSRF token
    token = client.cookies["csrftoken"].value
    response = client.post("/resilience/breakers/prometheus/reset/", {"csrfmiddlewaretoken": token})
    assert response.status_code == 302 and response["Location"] == "/resilience/"
    assert breaker("prometheus").current_state == CLOSED
    assert BreakerReset.objects.get().via == "page"
    assert "Circuit breaker prometheus reset" in client.get("/resilience/").content.decode()
    assert client.post("/resilience/breakers/nope/reset/", {"csrfmiddlewaretoken": token}).status_code == 404


def test_a_viewer_cannot_reset_from_the_page(viewer_client: Client) -> None:
    breaker("prometheus").open("test")
    assert viewer_client.post("/resilience/breakers/prometheus/reset/").status_code == 403
    assert breaker("prometheus").current_state == OPEN
    assert viewer_client.get("/resilience/breakers/prometheus/reset/").status_code == 405


def test_the_database_mode_follows_its_breaker_and_shows_a_banner(viewer_client: Client) -> None:
    from django.db import DatabaseError

    from apps.core.management.commands.worker import _store_behind_breaker
    from apps.vitals.services import metrics_prepare

    assert "Database unavailable" not in viewer_client.get("/").content.decode()
    breaker("database").open("test: connection refused")
    # The worker's writes stop at once; the entries stay pending in the stream.
    with pytest.raises(DatabaseError, match="database is open"):
        _store_behind_breaker(metrics_prepare(records=[]))
    html = viewer_client.get("/").content.decode()
    assert "Database unavailable" in html and "test: connection refused" in html
    breaker("database").close("test: recovered")
    assert "Database unavailable" not in viewer_client.get("/vitals/").content.decode()
