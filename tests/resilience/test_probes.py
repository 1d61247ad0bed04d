import json
import subprocess

import pytest
from django.db.migrations.recorder import MigrationRecorder
from django.test import Client, override_settings

from apps.resilience import health
from tests.helpers import BASE_DIR, PYTHON, subprocess_env

pytestmark = pytest.mark.django_db


def test_livez_answers_without_touching_dependencies(django_assert_num_queries) -> None:
    with django_assert_num_queries(0):
        response = Client().get("/livez")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"


def test_readyz_reports_each_check() -> None:
    response = Client().get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["failing"] == []
    assert set(body["checks"]) == {"database", "cache", "migrations"}
    assert all(check["ok"] and check["latency_ms"] >= 0 for check in body["checks"].values())


def test_probes_skip_host_validation_and_https_redirect() -> None:
    # Kubernetes calls probes by pod IP over plain HTTP.
    with override_settings(ALLOWED_HOSTS=["perfhub.example.com"], SECURE_SSL_REDIRECT=True):
        client = Client()
        assert client.get("/livez", HTTP_HOST="10.1.2.3:8000").status_code == 200
        assert client.get("/readyz", HTTP_HOST="10.1.2.3:8000").status_code == 200
        assert client.get("/login/", HTTP_HOST="10.1.2.3:8000").status_code == 400


def test_readyz_names_unapplied_migrations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "_migrations_applied", False)
    MigrationRecorder.Migration.objects.filter(app="core", name="0001_initial").delete()
    response = Client().get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["migrations"]
    assert "core.0001_initial" in body["checks"]["migrations"]["message"]


def _readyz_in_subprocess(**env: str) -> tuple[int, dict[str, object]]:
    script = (
        "import json, django; django.setup();"
        "from django.test import Client;"
        "r = Client().get('/readyz'); print(r.status_code); print(json.dumps(r.json()))"
    )
    result = subprocess.run(
        [PYTHON, "-c", script],
        cwd=BASE_DIR,
        env=subprocess_env(DJANGO_SETTINGS_MODULE="perfhub.settings", **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    status, body = result.stdout.strip().splitlines()[-2:]
    return int(status), json.loads(body)


def test_readyz_is_503_naming_the_database_when_it_is_unreachable() -> None:
    # Port 1 refuses connections at once; the connect timeout bounds the rest.
    status, body = _readyz_in_subprocess(DATABASE_URL="postgres://postgres@127.0.0.1:1/perfhub")
    assert status == 503
    assert body["failing"] == ["database"]


def test_readyz_is_503_naming_the_cache_when_redis_is_unreachable() -> None:
    status, body = _readyz_in_subprocess(REDIS_URL="redis://127.0.0.1:1/0")
    assert status == 503
    assert body["failing"] == ["cache"]
