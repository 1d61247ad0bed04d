"""django-prometheus' SQLite backend with PerfHub's one cursor wrapper
(apps.metrics.db.cursor): query metrics and, in sampled requests, a span.

django-prometheus' own create_cursor defines a new cursor class on every
call (a class creation per query, and a reference cycle for the garbage
collector). The class depends only on the cursor class, the alias and the
database settings, all fixed for one DatabaseWrapper, so it is built once.
"""

from functools import cached_property
from typing import Any

from django_prometheus.db.backends.sqlite3 import base

from apps.metrics.db.cursor import instrumented_cursor_class


class DatabaseWrapper(base.DatabaseWrapper):
    @cached_property
    def _instrumented_cursor_class(self) -> type:
        return instrumented_cursor_class(
            self.CURSOR_CLASS, alias=self.alias, vendor=self.vendor, settings_dict=self.settings_dict
        )

    def create_cursor(self, name: str | None = None) -> Any:
        return self.connection.cursor(factory=self._instrumented_cursor_class)
