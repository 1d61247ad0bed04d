"""django-prometheus' SQLite backend without a class definition per query.

Its create_cursor calls django_prometheus.db.common.ExportingCursorWrapper,
which defines a new CursorWrapper class on every call, so every query paid
for a class creation (and left a reference cycle for the garbage collector).
The class depends only on the cursor class, the alias and the vendor, all
fixed for one DatabaseWrapper, so it is built once. django-prometheus'
PostgreSQL backend already does so, in get_connection_params.
"""

from functools import cached_property
from typing import Any

from django_prometheus.db.backends.sqlite3 import base
from django_prometheus.db.common import ExportingCursorWrapper


class DatabaseWrapper(base.DatabaseWrapper):
    @cached_property
    def _exporting_cursor_class(self) -> type:
        return ExportingCursorWrapper(self.CURSOR_CLASS, self.alias, self.vendor)

    def create_cursor(self, name: str | None = None) -> Any:
        return self.connection.cursor(factory=self._exporting_cursor_class)
