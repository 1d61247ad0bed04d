"""One cursor wrapper for everything PerfHub records per query:
django-prometheus' query metrics, the request's Server-Timing db time and
an OpenTelemetry client span.

Before, each query went through three wrappers: django-prometheus' cursor
class, OpenTelemetry's DB-API proxy (sqlite3 or psycopg instrumentation)
and the Server-Timing ledger (a ``connection.execute_wrapper`` that every
request installed on every connection, with a clock of its own).
OpenTelemetry's instrumentation also builds a new tracer and integration
object for every connection, and Django opens a SQLite connection per
request, so the embedded default paid that on every request, traced or not.
This class does django-prometheus' accounting with the label children bound
once per cursor class, into django-prometheus' own metrics (same names and
labels), adds the time to the request's ledger, and opens a span only when
the current span is recording, i.e. inside a sampled request
(apps.metrics.tracing). Queries outside any traced request (the worker,
management commands) get no span: as roots of their own, they were traces
of one query each.
"""

import time
from typing import Any

from django_prometheus.db import errors_total, execute_many_total, execute_total, query_duration_seconds
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from apps.metrics.timing import current_ledger

_tracer = trace.get_tracer("perfhub.db")


def _span_name(query: Any, vendor: str) -> str:
    # OpenTelemetry's DB-API instrumentation names the span after the
    # statement's first word.
    words = query.split(None, 1) if isinstance(query, str) else []
    return words[0].upper() if words else vendor


def instrumented_cursor_class(cursor_class: type, *, alias: str, vendor: str, settings_dict: dict[str, Any]) -> type:
    """A subclass of the driver's cursor class (Django's SQLite wrapper, or
    the psycopg cursor class) for one database alias."""
    executed = execute_total.labels(alias, vendor)
    executed_many = execute_many_total.labels(alias, vendor)
    duration = query_duration_seconds.labels(alias, vendor)
    # The attributes OpenTelemetry's DB-API instrumentation sets (the
    # semantic conventions it uses by default).
    attributes: dict[str, str | int] = {"db.system": vendor, "db.name": str(settings_dict.get("NAME") or "")}
    if settings_dict.get("USER"):
        attributes["db.user"] = settings_dict["USER"]
    if settings_dict.get("HOST"):
        attributes["net.peer.name"] = settings_dict["HOST"]
    if settings_dict.get("PORT"):
        attributes["net.peer.port"] = int(settings_dict["PORT"])

    def record(call: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        ledger = current_ledger()
        start = time.perf_counter()
        try:
            if trace.get_current_span().is_recording():
                with _tracer.start_as_current_span(
                    _span_name(query, vendor),
                    kind=SpanKind.CLIENT,
                    attributes={**attributes, "db.statement": str(query)},
                ):
                    return call(query, *args, **kwargs)
            return call(query, *args, **kwargs)
        except BaseException as error:
            errors_total.labels(alias, vendor, type(error).__name__).inc()
            raise
        finally:
            seconds = time.perf_counter() - start
            duration.observe(seconds)
            # The request's Server-Timing db figure, from the same clock
            # readings (one execute or executemany counts as one query).
            if ledger is not None:
                ledger.db_seconds += seconds
                ledger.db_queries += 1

    class InstrumentedCursor(cursor_class):
        def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
            executed.inc()
            return record(super().execute, query, *args, **kwargs)

        def executemany(self, query: Any, param_list: Any, *args: Any, **kwargs: Any) -> Any:
            # As django-prometheus counts: per row, and before running them
            # (a generator of rows would be consumed by len()).
            param_list = list(param_list)
            executed.inc(len(param_list))
            executed_many.inc(len(param_list))
            return record(super().executemany, query, param_list, *args, **kwargs)

    return InstrumentedCursor
