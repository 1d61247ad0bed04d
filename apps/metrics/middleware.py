import logging
import re
import secrets
import time
from collections.abc import Callable
from contextlib import ExitStack

from django.db import connections
from django.http import HttpRequest, HttpResponse

from apps.metrics.instruments import REQUESTS_IN_FLIGHT, request_observe
from apps.metrics.logging import request_id_var
from apps.metrics.query_insight import query_sample_start
from apps.metrics.timing import request_ledger, time_sql

request_logger = logging.getLogger("perfhub.request")

# An upstream proxy's id is kept so one id follows the request through every
# hop; anything that could forge log lines or headers is replaced.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class RequestLogMiddleware:
    """One log line per request, tagged with a request id that is also
    returned as ``X-Request-ID``."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # META rather than request.headers, which copies every header into
        # a new dict on first use.
        incoming = request.META.get("HTTP_X_REQUEST_ID", "")
        request_id = incoming if _VALID_REQUEST_ID.match(incoming) else secrets.token_hex(16)
        token = request_id_var.set(request_id)
        start = time.perf_counter()
        try:
            response = self.get_response(request)
            response["X-Request-ID"] = request_id
            if request_logger.isEnabledFor(logging.INFO):
                duration_ms = (time.perf_counter() - start) * 1000
                user = getattr(request, "user", None)
                request_logger.info(
                    "%s %s %s %.1fms",
                    request.method,
                    request.path,
                    response.status_code,
                    duration_ms,
                    extra={
                        "method": request.method,
                        # The path only: query strings can carry site keys.
                        "path": request.path,
                        "status": response.status_code,
                        "duration_ms": round(duration_ms, 2),
                        "user_id": user.pk if user is not None and user.is_authenticated else None,
                    },
                )
            return response
        finally:
            request_id_var.reset(token)


class ServerTimingMiddleware:
    """Adds ``Server-Timing: db, cache, app`` so a browser's navigation timing
    (and PerfHub's own RUM snippet) shows where the backend spent its time."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        start = time.perf_counter()
        with request_ledger() as ledger, ExitStack() as wrappers, REQUESTS_IN_FLIGHT.track_inprogress():
            for connection in connections.all(initialized_only=False):
                wrappers.enter_context(connection.execute_wrapper(time_sql))
            queries = query_sample_start(wrappers)
            response = self.get_response(request)
        total_ms = (time.perf_counter() - start) * 1000
        db_ms = ledger.db_seconds * 1000
        cache_ms = ledger.cache_seconds * 1000
        app_ms = max(total_ms - db_ms - cache_ms, 0.0)
        response["Server-Timing"] = (
            f'db;dur={db_ms:.2f};desc="{ledger.db_queries} queries", '
            f'cache;dur={cache_ms:.2f};desc="{ledger.cache_calls} calls", '
            f"app;dur={app_ms:.2f}"
        )
        request_observe(request, ledger, queries)
        return response
