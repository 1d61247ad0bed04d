"""Everything PerfHub records about each request, in one middleware.

Per request: a request id (also returned as ``X-Request-ID``), one log line,
``Server-Timing`` with the db / cache / app split, and the Prometheus series
the ops overview and the usual django-prometheus dashboards read.

This replaces django-prometheus' two request middlewares (and what used to be
two middlewares of our own). Theirs record 13 series per request, most of
them sums of others (requests by method, by transport, responses by status,
by charset, by template name, body sizes, latency with and without the
middleware stack), and each Prometheus write under gunicorn is a write to a
memory-mapped file; with the extra middleware layers and hooks they cost a
few percent of a simple API request's throughput (bench/overhead.py). Here
each request makes one pass with one clock, and writes only the series that
cannot be derived from the others, into django-prometheus' own metric
families so their names and labels stay what dashboards expect:

- ``django_http_requests_total_by_view_transport_method``
- ``django_http_responses_total_by_status_view_method``
- ``django_http_requests_latency_seconds_by_view_method`` (measured around
  the whole middleware stack below this one, i.e. what the client waits for,
  minus the probes and tracing middlewares above it)
- ``django_http_exceptions_total_by_type`` / ``_by_view``, for view exceptions
- PerfHub's ``perfhub_view_db_seconds``, ``perfhub_view_cache_seconds`` and
  ``perfhub_http_requests_in_flight`` (apps.metrics.instruments).
"""

import logging
import random
import re
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from django.http import HttpRequest, HttpResponse
from django_prometheus.middleware import Metrics

from apps.metrics.instruments import REQUESTS_IN_FLIGHT, VIEW_CACHE_SECONDS, VIEW_DB_SECONDS, view_name
from apps.metrics.logging import request_id_var, request_line_handler
from apps.metrics.query_insight import query_sample_record, query_sample_start
from apps.metrics.timing import RequestLedger, request_ledger

request_logger = logging.getLogger("perfhub.request")

# An upstream proxy's id is kept so one id follows the request through every
# hop; anything that could forge log lines or headers is replaced.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

# As django-prometheus labels methods: anything else is one label value, so a
# client cannot create series at will.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "OPTIONS", "CONNECT", "PATCH"})
_INVALID_METHOD = "<invalid method>"


def request_id_for(incoming: str) -> str:
    """The request's id: an upstream proxy's, when it is a safe one, so one
    id follows the request through every hop; else a new one."""
    if _VALID_REQUEST_ID.match(incoming):
        return incoming
    # 128 random bits as hex. An id only has to be unique, not secret (a
    # client may send its own): Python's random, reseeded in every forked
    # worker, is enough, and unlike secrets it makes no system call per
    # request.
    return f"{random.getrandbits(128):032x}"


def server_timing(seconds: float, ledger: RequestLedger) -> str:
    """The ``Server-Timing`` header of a request that took ``seconds``."""
    db_ms = ledger.db_seconds * 1000
    cache_ms = ledger.cache_seconds * 1000
    return (
        f'db;dur={db_ms:.2f};desc="{ledger.db_queries} queries", '
        f'cache;dur={cache_ms:.2f};desc="{ledger.cache_calls} calls", '
        f"app;dur={max(seconds * 1000 - db_ms - cache_ms, 0.0):.2f}"
    )


class RequestInstruments:
    """The Prometheus series and the log line of a finished request. Both
    of PerfHub's ways in record through one instance each: this module's
    middleware, and the beacon endpoint's WSGI path (apps.vitals.wsgi)."""

    def __init__(self) -> None:
        self.metrics = Metrics.get_instance()
        # prometheus-client's labels() stringifies the values, takes the
        # metric's lock and searches its children on every call; a metric's
        # children never change, so each is looked up once per process. The
        # keys are bounded like the series themselves (views, methods,
        # statuses). ``record`` looks up the five series of a request at
        # once, by the request's kind.
        self._children: dict[tuple[Any, ...], Any] = {}
        self._series: dict[tuple[str, str, int, bool], tuple[Any, ...]] = {}

    def record(
        self,
        *,
        view: str,
        method: str,
        path: str,
        status: int,
        seconds: float,
        ledger: RequestLedger,
        secure: bool,
        user: Any = None,
    ) -> None:
        # By the method's label, so that invented methods add no keys.
        key = (view, method if method in _METHODS else _INVALID_METHOD, status, secure)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = self._request_series(*key)
        requests, responses, latency, db_seconds, cache_seconds = series
        requests.inc()
        responses.inc()
        latency.observe(seconds)
        db_seconds.observe(ledger.db_seconds)
        cache_seconds.observe(ledger.cache_seconds)

        if request_logger.isEnabledFor(logging.INFO):
            duration_ms = seconds * 1000
            fields = {
                "method": method,
                # The path only: query strings can carry site keys.
                "path": path,
                "status": status,
                "duration_ms": round(duration_ms, 2),
                "user_id": user.pk if user is not None and user.is_authenticated else None,
            }
            message = f"{method} {path} {status} {duration_ms:.1f}ms"
            handler = request_line_handler(request_logger, logging.INFO)
            if handler is not None:
                handler.write_line(request_logger.name, logging.INFO, message, fields)
            else:
                # makeRecord and handle are what Logger.info does, without
                # findCaller: walking the stack and working out this line's
                # number was a tenth of the log line's cost, for a source
                # location no request log format shows.
                request_logger.handle(
                    request_logger.makeRecord(
                        request_logger.name,
                        logging.INFO,
                        __file__,
                        0,
                        message,
                        (),
                        None,
                        extra=fields,
                    )
                )

    def _request_series(self, view: str, label_method: str, status: int, secure: bool) -> tuple[Any, ...]:
        """The children ``record`` writes for one kind of request."""
        metrics = self.metrics
        return (
            metrics.requests_by_view_transport_method.labels(
                view=view, transport="https" if secure else "http", method=label_method
            ),
            metrics.responses_by_status_view_method.labels(status=status, view=view, method=label_method),
            metrics.requests_latency_by_view_method.labels(view=view, method=label_method),
            VIEW_DB_SECONDS.labels(view=view),
            VIEW_CACHE_SECONDS.labels(view=view),
        )

    def child(self, metric: Any, **labels: Any) -> Any:
        # Each call site passes the same label names in the same order.
        key = (metric, *labels.values())
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(**labels)
        return child


class InstrumentationMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.instruments = RequestInstruments()

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # META rather than request.headers, which copies every header into
        # a new dict on first use.
        request_id = request_id_for(request.META.get("HTTP_X_REQUEST_ID", ""))
        request_id_token = request_id_var.set(request_id)
        start = time.perf_counter()
        REQUESTS_IN_FLIGHT.inc()
        try:
            # SQL time reaches the ledger from the instrumented database
            # cursor (apps.metrics.db.cursor), cache time from the cache
            # backends.
            with request_ledger() as ledger, ExitStack() as wrappers:
                queries = query_sample_start(wrappers)
                response = self.get_response(request)
            seconds = time.perf_counter() - start
            response["Server-Timing"] = server_timing(seconds, ledger)
            response["X-Request-ID"] = request_id
            view = view_name(request)
            self.instruments.record(
                view=view,
                method=request.method or "",
                path=request.path,
                status=response.status_code,
                seconds=seconds,
                ledger=ledger,
                secure=request.is_secure(),
                user=getattr(request, "user", None),
            )
            if queries is not None:
                query_sample_record(view=view, sample=queries)
            return response
        finally:
            REQUESTS_IN_FLIGHT.dec()
            request_id_var.reset(request_id_token)

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        # Only exceptions raised by a view reach this hook; Django then turns
        # them into a 500 response, counted above like any other.
        self.instruments.child(self.instruments.metrics.exceptions_by_type, type=type(exception).__name__).inc()
        self.instruments.child(self.instruments.metrics.exceptions_by_view, view=view_name(request)).inc()
