import subprocess

import pytest
from django.core.exceptions import ImproperlyConfigured

from perfhub.env import database_from_url, env_bool, env_float, env_int, env_list
from tests.helpers import BASE_DIR, PYTHON, subprocess_env


@pytest.mark.parametrize(("raw", "expected"), [("True", True), ("yes", True), ("1", True), ("off", False), ("", False)])
def test_env_bool_reads_common_spellings(monkeypatch: pytest.MonkeyPatch, raw: str, expected: bool) -> None:
    monkeypatch.setenv("PERFHUB_X", raw)
    assert env_bool("PERFHUB_X") is expected


def test_env_readers_reject_mistyped_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERFHUB_X", "maybe")
    with pytest.raises(ImproperlyConfigured, match="PERFHUB_X must be True or False"):
        env_bool("PERFHUB_X")
    with pytest.raises(ImproperlyConfigured, match="PERFHUB_X must be a whole number"):
        env_int("PERFHUB_X", 1)
    with pytest.raises(ImproperlyConfigured, match="PERFHUB_X must be a number"):
        env_float("PERFHUB_X", 1.0, minimum=0, maximum=2)
    monkeypatch.setenv("PERFHUB_X", "0")
    with pytest.raises(ImproperlyConfigured, match="at least 1"):
        env_int("PERFHUB_X", 2, minimum=1)
    monkeypatch.setenv("PERFHUB_X", " a, b ,,c ")
    assert env_list("PERFHUB_X", []) == ["a", "b", "c"]


def test_database_urls() -> None:
    pg = database_from_url(
        "postgres://perf%40hub:s%3Acret@db.internal:6432/perfhub?sslmode=require",
        engine_prefix="django.db.backends",
        conn_options={"connect_timeout": 5},
    )
    assert pg["ENGINE"] == "django.db.backends.postgresql"
    assert (pg["USER"], pg["PASSWORD"], pg["HOST"], pg["PORT"], pg["NAME"]) == (
        "perf@hub",
        "s:cret",
        "db.internal",
        "6432",
        "perfhub",
    )
    assert pg["OPTIONS"] == {"connect_timeout": 5, "sslmode": "require"}
    sqlite = database_from_url("sqlite:////var/lib/perfhub/db.sqlite3", engine_prefix="x", conn_options={})
    assert sqlite == {"ENGINE": "x.sqlite3", "NAME": "/var/lib/perfhub/db.sqlite3"}
    for bad, message in [
        ("mysql://root@localhost/perfhub", "must start with postgres:// or sqlite://"),
        ("postgres://localhost:5432/", "must name a database"),
        ("sqlite://relative.db", "absolute path"),
        ("sqlite:///relative.db", "absolute path"),
    ]:
        with pytest.raises(ImproperlyConfigured, match=message):
            database_from_url(bad, engine_prefix="x", conn_options={})


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=BASE_DIR,
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.django_db
def test_a_mistyped_variable_stops_start_up_naming_it() -> None:
    result = _manage("check", DEBUG="maybe")
    assert result.returncode != 0
    assert "DEBUG must be True or False, not 'maybe'" in result.stderr


@pytest.mark.django_db
def test_a_short_secret_key_is_refused() -> None:
    result = _manage("check", SECRET_KEY="changeme")
    assert result.returncode != 0
    assert "SECRET_KEY must be at least 50 characters" in result.stderr


@pytest.mark.django_db
def test_production_settings_pass_check_deploy_without_warnings() -> None:
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DEBUG="False",
        PERFHUB_HTTPS="True",
        PERFHUB_TRUST_X_FORWARDED_PROTO="True",
        SECRET_KEY="kq3-pA8x_Zt7Lw2Rm9Vb4Nc6Ys1Hd5Fg0Jj3Uu8Ee2Oo7Ii4Aa9Ss6Dd1Ff5Gg0Hh",
        ALLOWED_HOSTS="perfhub.example.com",
    )
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout
