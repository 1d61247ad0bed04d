"""Django's PostgreSQL backend with django-prometheus' connection counters
and PerfHub's one cursor wrapper (apps.metrics.db.cursor): query metrics
and, in sampled requests, a span."""

from typing import Any

import psycopg
from django.db.backends.postgresql import base
from django_prometheus.db.common import DatabaseWrapperMixin

from apps.metrics.db.cursor import instrumented_cursor_class


class DatabaseWrapper(DatabaseWrapperMixin, base.DatabaseWrapper):
    _binary_cursor_class: type | None = None

    def get_connection_params(self) -> dict[str, Any]:
        params = super().get_connection_params()
        # psycopg then creates every client-side cursor from this class
        # (pooled connections included); named cursors are not counted, as
        # with django-prometheus' own backend.
        params["cursor_factory"] = instrumented_cursor_class(
            params["cursor_factory"], alias=self.alias, vendor=self.vendor, settings_dict=self.settings_dict
        )
        return params

    def create_cursor(self, name: str | None = None) -> Any:
        # The mixin's create_cursor (a cursor factory argument) is for
        # drivers other than psycopg 3.
        return base.DatabaseWrapper.create_cursor(self, name=name)

    def binary_cursor(self) -> Any:
        """A cursor whose results come in PostgreSQL's binary format, for
        queries that read much bytea (the dashboards' rollup blocks): the
        text format sends it as hex, twice its size, for psycopg to decode.
        Bound server-side, since psycopg gives binary results to no
        client-side cursor, and instrumented and wrapped as Django's own
        cursors are (query metrics, spans, Server-Timing, query logging)."""
        self.ensure_connection()
        if self._binary_cursor_class is None:
            self._binary_cursor_class = instrumented_cursor_class(
                psycopg.Cursor, alias=self.alias, vendor=self.vendor, settings_dict=self.settings_dict
            )
        cursor = self._binary_cursor_class(self.connection)
        cursor.format = psycopg.pq.Format.BINARY
        return self._prepare_cursor(cursor)
