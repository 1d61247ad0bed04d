"""The backup endpoint exists with its permissions before backups do."""

import pytest
from django.contrib.auth.models import User
from django.test import Client

pytestmark = pytest.mark.django_db

BACKUP = "/api/v1/performance/backup"


def test_anonymous_callers_are_refused() -> None:
    assert Client().post(BACKUP).status_code == 401


def test_a_read_token_is_not_enough(read_token: str) -> None:
    response = Client().post(BACKUP, HTTP_AUTHORIZATION=f"Bearer {read_token}")
    assert response.status_code == 403


def test_staff_who_are_not_admins_are_refused(viewer_client: Client, outsider_client: Client) -> None:
    assert viewer_client.post(BACKUP).status_code == 403
    assert outsider_client.post(BACKUP).status_code == 403


def test_an_admin_token_gets_backups_not_configured(admin_token: str) -> None:
    response = Client().post(BACKUP, HTTP_AUTHORIZATION=f"Bearer {admin_token}")
    assert response.status_code == 503
    assert response.json()["detail"] == "backups not configured"


def test_an_admin_session_needs_the_csrf_token(owner: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    refused = client.post(BACKUP)
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]

    client.get("/")  # sets the CSRF cookie, as a page would
    response = client.post(BACKUP, HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value)
    assert response.status_code == 503
    assert response.json()["detail"] == "backups not configured"


def test_reading_is_not_allowed(admin_token: str) -> None:
    assert Client().get(BACKUP, HTTP_AUTHORIZATION=f"Bearer {admin_token}").status_code == 405
