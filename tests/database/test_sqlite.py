"""The SQLite subset (the embedded default)."""

import io

import pytest
from django.core.management import call_command
from django.test import Client

from apps.database import selectors
from apps.database.services import snapshot_take
from tests.database.helpers import sqlite_only

pytestmark = pytest.mark.django_db


def test_file_pages_tables_and_indexes() -> None:
    sqlite_only()
    stats = selectors.sqlite_stats()

    # WAL mode: until a checkpoint, the newest pages live in the -wal file,
    # so the main file may be shorter than the database.
    assert stats["file_bytes"]["main"] % stats["page_size"] == 0
    assert 0 < stats["file_bytes"]["main"] <= stats["page_count"] * stats["page_size"]
    assert stats["free_bytes"] == stats["freelist_count"] * stats["page_size"]
    tables = {t["name"]: t for t in stats["tables"]}
    assert tables["django_migrations"]["rows"] > 10
    assert "database_snapshot" in tables
    assert "database_snapshot_taken_at" in {i["name"] for i in stats["indexes"]}


def test_the_page_shows_the_subset_and_says_the_rest_is_postgresql_only(viewer_client: Client) -> None:
    sqlite_only()
    html = viewer_client.get("/database/").content.decode()
    fragment = viewer_client.get("/database/", {"panel": "sqlite"}, HTTP_HX_REQUEST="true").content.decode()

    assert "SQLite file" in html
    assert "PostgreSQL only" in html
    assert "django_migrations" in html
    assert fragment.lstrip().startswith('<section class="panel" id="panel-sqlite"')
    # The integrity check button is for administrators.
    assert "Check integrity" not in html


def test_the_integrity_check_is_for_administrators(owner_client: Client, viewer_client: Client) -> None:
    sqlite_only()
    owner = owner_client.post("/database/integrity-check/", HTTP_HX_REQUEST="true")

    assert owner.status_code == 200
    assert "found no problems" in owner.content.decode()
    assert viewer_client.post("/database/integrity-check/").status_code == 403
    assert owner_client.get("/database/integrity-check/").status_code == 405
    assert "Check integrity" in owner_client.get("/database/").content.decode()


def test_snapshots_are_a_postgresql_thing() -> None:
    sqlite_only()
    out = io.StringIO()
    call_command("database_snapshot", stdout=out)

    assert snapshot_take() is None
    assert "PostgreSQL-only" in out.getvalue()


def test_the_integrity_check_on_postgresql_says_it_is_for_sqlite(owner_client: Client) -> None:
    if selectors.is_postgresql():
        response = owner_client.post("/database/integrity-check/")
        assert response.status_code == 400
        assert "for SQLite" in response.content.decode()
    else:
        pytest.skip("the PostgreSQL answer of the SQLite-only check")
