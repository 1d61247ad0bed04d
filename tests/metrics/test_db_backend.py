"""PerfHub's instrumented database backends (apps.metrics.db)."""

import pytest
from django.db import connection
from prometheus_client import REGISTRY

pytestmark = pytest.mark.django_db


def test_sqlite_queries_are_counted_through_one_cursor_class() -> None:
    if connection.vendor != "sqlite":
        # A property of this configuration, not a missing service: CI runs
        # it in the embedded-default pass.
        pytest.skip("the fix is to django-prometheus' SQLite backend")
    labels = {"alias": connection.alias, "vendor": connection.vendor}
    before = REGISTRY.get_sample_value("django_db_execute_total", labels) or 0.0

    with connection.cursor() as first, connection.cursor() as second:
        first.execute("SELECT 1")
        second.execute("SELECT 1")
        # django-prometheus' own backend defines a new class per cursor.
        assert type(first.cursor) is type(second.cursor)

    assert REGISTRY.get_sample_value("django_db_execute_total", labels) == before + 2
