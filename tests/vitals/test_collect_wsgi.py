"""What the beacon endpoint's WSGI path (apps.vitals.wsgi) adds or leaves to
Django; the endpoint's contract itself is tests/vitals/test_collect.py,
which runs on this path too."""

import json
import logging

import pytest
from django.db import connection
from django.test import Client
from prometheus_client import REGISTRY
from pytest_django.fixtures import Settings as SettingsWrapper

from apps.vitals.collect import forget_cached_sites
from apps.vitals.models import Site
from apps.vitals.wsgi import BeaconApplication
from tests.vitals.helpers import ORIGIN, BeaconClient, beacon, lcp, post

pytestmark = pytest.mark.django_db

COLLECT = "/api/v1/vitals/collect"


@pytest.fixture(autouse=True)
def _fresh_site_cache() -> None:
    forget_cached_sites()


@pytest.fixture
def site() -> Site:
    return Site.objects.create(name="shop", allowed_origins=[ORIGIN])


def test_perfhub_wsgi_answers_beacons_before_django() -> None:
    from perfhub.wsgi import application

    assert isinstance(application, BeaconApplication)
    assert application.path == COLLECT


def test_the_answer_carries_what_djangos_stack_would_add(site: Site) -> None:
    wsgi = post(BeaconClient(), site, beacon(lcp()), HTTP_X_REQUEST_ID="upstream-id.1")
    django = post(Client(), site, beacon(lcp(n=2)))
    assert (wsgi.status_code, django.status_code) == (202, 202)
    for header in ("X-Content-Type-Options", "Referrer-Policy", "Cross-Origin-Opener-Policy", "Vary", "Cache-Control"):
        assert wsgi[header] == django[header], header
    assert wsgi["Content-Type"] == django["Content-Type"] == "application/json"
    assert wsgi["X-Request-ID"] == "upstream-id.1"
    assert [part.split(";")[0] for part in wsgi["Server-Timing"].split(", ")] == ["db", "cache", "app"]
    assert "Strict-Transport-Security" not in wsgi


def test_https_answers_carry_hsts(site: Site, settings: SettingsWrapper) -> None:
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    response = BeaconClient().post(
        f"{COLLECT}?key={site.public_key}", data=json.dumps(beacon(lcp())), content_type="text/plain", secure=True
    )
    assert response.status_code == 202
    assert response["Strict-Transport-Security"] == "max-age=3600; includeSubDomains"


def test_a_malicious_request_id_is_replaced(site: Site) -> None:
    response = post(BeaconClient(), site, beacon(lcp()), HTTP_X_REQUEST_ID="x\r\nSet-Cookie: a=b")
    assert response.status_code == 202
    assert len(response["X-Request-ID"]) == 32
    assert "Set-Cookie" not in response


def test_plain_http_under_ssl_redirect_gets_djangos_redirect(site: Site, settings: SettingsWrapper) -> None:
    settings.SECURE_SSL_REDIRECT = True
    response = post(BeaconClient(), site, beacon(lcp()))
    assert response.status_code == 301
    assert response["Location"] == f"https://testserver{COLLECT}?key={site.public_key}"


def test_a_host_off_allowed_hosts_gets_djangos_400(site: Site) -> None:
    assert post(BeaconClient(), site, beacon(lcp()), HTTP_HOST="evil.example").status_code == 400


def test_the_request_is_logged_and_counted_under_the_views_name(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    series = "django_http_responses_total_by_status_view_method_total"
    labels = {"status": "202", "view": "vitals-collect", "method": "POST"}
    before = REGISTRY.get_sample_value(series, labels) or 0
    with caplog.at_level(logging.INFO, logger="perfhub.request"):
        response = post(BeaconClient(), site, beacon(lcp()))
    assert response.status_code == 202
    assert REGISTRY.get_sample_value(series, labels) == before + 1
    [record] = [r for r in caplog.records if r.name == "perfhub.request"]
    assert (record.path, record.status, record.method) == (COLLECT, 202, "POST")  # type: ignore[attr-defined]


def test_beacons_go_through_django_while_tracing_is_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    answered = []

    def django(environ: dict[str, object], start_response: object) -> list[bytes]:
        answered.append(environ["PATH_INFO"])
        return [b""]

    application = BeaconApplication(django)
    assert application.path is None
    application({"PATH_INFO": COLLECT, "REQUEST_METHOD": "POST"}, lambda *args: None)
    assert answered == [COLLECT]


@pytest.mark.django_db(transaction=True)
def test_a_connection_opened_for_a_beacon_is_closed_when_it_is_answered() -> None:
    site = Site.objects.create(name="shop", allowed_origins=[ORIGIN])
    connection.close()
    client = BeaconClient()
    # The first beacon reads the site from the database.
    assert post(client, site, beacon(lcp())).status_code == 202
    assert connection.connection is None
    # As Django's close_old_connections would: one opened in this thread
    # since the last beacon is closed too.
    connection.ensure_connection()
    assert post(client, site, beacon(lcp(n=2))).status_code == 202
    assert connection.connection is None
