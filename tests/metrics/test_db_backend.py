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


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"alias": connection.alias, "vendor": connection.vendor, **labels}) or 0.0


def test_one_cursor_wrapper_counts_queries_rows_and_errors_on_both_backends() -> None:
    executed = _sample("django_db_execute_total")
    executed_many = _sample("django_db_execute_many_total")
    timed = _sample("django_db_query_duration_seconds_count")
    error_type = "OperationalError" if connection.vendor == "sqlite" else "UndefinedColumn"
    errors = _sample("django_db_errors_total", type=error_type)

    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE perfhub_cursor_test (n integer)")
        cursor.executemany("INSERT INTO perfhub_cursor_test (n) VALUES (%s)", [(n,) for n in range(3)])
        cursor.execute("SELECT count(*) FROM perfhub_cursor_test")
        assert cursor.fetchone()[0] == 3
        with pytest.raises(Exception) as raised:
            cursor.execute("SELECT no_such_column FROM perfhub_cursor_test")

    assert _sample("django_db_execute_total") == executed + 2 + 3 + 1
    assert _sample("django_db_execute_many_total") == executed_many + 3
    assert _sample("django_db_query_duration_seconds_count") == timed + 4
    # Django re-raises the driver's error as its own class of the same name.
    assert type(raised.value).__name__ in {"OperationalError", "ProgrammingError"}
    assert _sample("django_db_errors_total", type=error_type) == errors + 1
