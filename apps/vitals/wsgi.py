"""The beacon endpoint served straight from WSGI, ahead of Django's handler.

Beacons are most of PerfHub's requests, and Django's request machinery does
nothing for them that the endpoint needs: it takes no session, user, CSRF
token, template or URL parameter. Building a Django request and response,
sending the request signals and passing the middleware layers cost about a
fifth of a beacon's time: without them, bench/ingest.py served 29% more
beacons (bench/README.md). So perfhub.wsgi hands requests for the
endpoint's path to ``BeaconApplication``, which reads the few things the
endpoint needs from the WSGI environ and answers with the same function the
Django view uses (apps.vitals.collect.answer_beacon); every other request
goes to Django as before.

What Django's stack would add is added here too: the request id, log line,
Prometheus series and ``Server-Timing`` of the instrumentation middleware
(through the same apps.metrics.middleware.RequestInstruments), and the
security headers of SecurityMiddleware. Requests that need more than that
are left to Django, whose answers are then the usual ones: a host off
ALLOWED_HOSTS (400), plain HTTP under SECURE_SSL_REDIRECT (the redirect), and
every beacon while OpenTelemetry tracing is on, so that beacons are traced
like any other request. No library does this dispatch for Django: the WSGI
routers (werkzeug's DispatcherMiddleware) route by path prefix to another
application, not to a function answering one path.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

import orjson
from django.conf import settings
from django.core.handlers.wsgi import LimitedStream
from django.db import connections
from django.db.backends.signals import connection_created
from django.dispatch import receiver
from django.http.request import split_domain_port, validate_host
from django.urls import NoReverseMatch, reverse

from apps.metrics.instruments import REQUESTS_IN_FLIGHT
from apps.metrics.logging import request_id_var
from apps.metrics.middleware import RequestInstruments, request_id_for, server_timing
from apps.metrics.timing import request_ledger
from apps.vitals.collect import Answer, BeaconRequest, answer_beacon, client_ip
from perfhub.telemetry import tracing_requested

logger = logging.getLogger(__name__)

VIEW_NAME = "vitals-collect"
# "202 Accepted" and the like, made once: HTTPStatus(202) goes through the
# enum machinery on each call.
_STATUS_LINES = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}
WSGIApplication = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class BeaconApplication:
    """Answers the beacon endpoint's path and passes every other request to
    ``django_application``."""

    def __init__(self, django_application: WSGIApplication) -> None:
        self.django_application = django_application
        # The path as PATH_INFO has it: no request has set a script prefix
        # yet, so reverse() adds none.
        try:
            self.path: str | None = reverse(VIEW_NAME)
        except NoReverseMatch:
            # A settings module without the endpoint (bench/parse_only.py).
            self.path = None
        if tracing_requested():
            self.path = None  # beacons go through Django, to be traced
        self.instruments = RequestInstruments() if settings.INSTRUMENT else None
        self.security_headers = _security_headers()
        # Host headers seen, and whether ALLOWED_HOSTS allows them.
        self.hosts: dict[str, bool] = {}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != self.path:
            return self.django_application(environ, start_response)
        secure = _is_secure(environ)
        host = _raw_host(environ)
        if (settings.SECURE_SSL_REDIRECT and not secure) or not self._host_allowed(host):
            return self.django_application(environ, start_response)
        if self.instruments is None:
            answer = self._answer(environ, secure, host)
            headers = answer.headers
        else:
            answer, headers = self._instrumented_answer(self.instruments, environ, secure, host)
        headers.update(self.security_headers["https" if secure else "http"])
        header_list = list(headers.items())
        if answer.content_type is not None:
            header_list.append(("Content-Type", answer.content_type))
        header_list.append(("Content-Length", str(len(answer.body))))
        start_response(_STATUS_LINES[answer.status], header_list)
        return [answer.body]

    def _host_allowed(self, host: str) -> bool:
        # As HttpRequest.get_host validates it, once per Host header.
        allowed = self.hosts.get(host)
        if allowed is None:
            allowed_hosts = settings.ALLOWED_HOSTS
            if settings.DEBUG and not allowed_hosts:
                allowed_hosts = [".localhost", "127.0.0.1", "[::1]"]
            domain, _ = split_domain_port(host)
            allowed = bool(domain and validate_host(domain, allowed_hosts))
            if len(self.hosts) > 1_000:
                self.hosts.clear()  # hostile Host headers must not grow it without bound
            self.hosts[host] = allowed
        return allowed

    def _instrumented_answer(
        self, instruments: RequestInstruments, environ: dict[str, Any], secure: bool, host: str
    ) -> tuple[Answer, dict[str, str]]:
        request_id = request_id_for(environ.get("HTTP_X_REQUEST_ID", ""))
        request_id_token = request_id_var.set(request_id)
        start = time.perf_counter()
        REQUESTS_IN_FLIGHT.inc()
        try:
            with request_ledger() as ledger:
                answer = self._answer(environ, secure, host)
            seconds = time.perf_counter() - start
            headers = answer.headers
            headers["Server-Timing"] = server_timing(seconds, ledger)
            headers["X-Request-ID"] = request_id
            instruments.record(
                view=VIEW_NAME,
                method=environ.get("REQUEST_METHOD", ""),
                path=environ.get("SCRIPT_NAME", "") + environ["PATH_INFO"],
                status=answer.status,
                seconds=seconds,
                ledger=ledger,
                secure=secure,
            )
            return answer, headers
        finally:
            REQUESTS_IN_FLIGHT.dec()
            request_id_var.reset(request_id_token)

    def _answer(self, environ: dict[str, Any], secure: bool, host: str) -> Answer:
        try:
            return answer_beacon(_beacon_request(environ, secure, host))
        except Exception as exc:
            # As Django's handler would: logged with its traceback, a 500.
            logger.exception("Internal Server Error: %s", environ["PATH_INFO"])
            if self.instruments is not None:
                metrics = self.instruments.metrics
                self.instruments.child(metrics.exceptions_by_type, type=type(exc).__name__).inc()
                self.instruments.child(metrics.exceptions_by_view, view=VIEW_NAME).inc()
            return Answer(500, orjson.dumps({"error": "internal error"}), "application/json")
        finally:
            _close_old_connections()


# Whether this thread opened a database connection since its last beacon.
# CONN_MAX_AGE is 0 (settings), so a connection never outlives the request
# that opened it, and a beacon that opened none has nothing to close: most
# beacons, which touch no database. Looking, through Django's thread-critical
# connection store, cost about 20 microseconds a beacon.
_connected = threading.local()


@receiver(connection_created)
def _note_connection(**kwargs: Any) -> None:
    _connected.since_last_beacon = True


def _close_old_connections() -> None:
    """What Django's close_old_connections does at the end of each request:
    a database connection that broke or outlived CONN_MAX_AGE (the site
    lookup, the fallback when Redis is down) is closed, or returned to the
    pool. A connection inside a transaction, which a request never leaves
    open but a test case does around its requests, is left alone."""
    if not getattr(_connected, "since_last_beacon", False):
        return
    _connected.since_last_beacon = False
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()


def _beacon_request(environ: dict[str, Any], secure: bool, host: str) -> BeaconRequest:
    # WSGI gives the query string and headers as latin-1 decoded bytes;
    # Django reads the query string as UTF-8, and so does this.
    query = environ.get("QUERY_STRING", "")
    key = ""
    if query.startswith("key=") and query.isascii() and "&" not in query and "%" not in query and "+" not in query:
        # What rum.js sends, ?key=<the site's key>: nothing to split or
        # decode, and parse_qsl would give the same.
        key = query[4:]
    elif query:
        decoded = query.encode("latin-1").decode("utf-8", "replace")
        for name, value in parse_qsl(decoded, keep_blank_values=True):
            if name == "key":
                key = value  # the last, as QueryDict.get has it
    content_length = environ.get("CONTENT_LENGTH") or ""
    # As WSGIRequest reads it: no further than the declared length.
    stream = LimitedStream(environ["wsgi.input"], int(content_length) if content_length.isdigit() else 0)
    return BeaconRequest(
        method=environ.get("REQUEST_METHOD", "").upper(),
        key=key or environ.get("HTTP_X_PERFHUB_KEY", ""),
        origin=environ.get("HTTP_ORIGIN", ""),
        own_origin=f"{'https' if secure else 'http'}://{host}",
        content_length=content_length,
        content_type=environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower(),
        user_agent=environ.get("HTTP_USER_AGENT", ""),
        referer=environ.get("HTTP_REFERER", ""),
        client_ip=client_ip(environ.get("HTTP_X_FORWARDED_FOR", ""), environ.get("REMOTE_ADDR", "")),
        read=stream.read,
    )


def _is_secure(environ: dict[str, Any]) -> bool:
    # As HttpRequest.is_secure: the trusted proxy's header, else the scheme.
    proxy_header = settings.SECURE_PROXY_SSL_HEADER
    if proxy_header:
        header, secure_value = proxy_header
        value = environ.get(header)
        if value is not None:
            return bool(value.split(",", 1)[0].strip() == secure_value)
    return bool(environ.get("wsgi.url_scheme") == "https")


def _raw_host(environ: dict[str, Any]) -> str:
    # As HttpRequest._get_raw_host.
    if settings.USE_X_FORWARDED_HOST and "HTTP_X_FORWARDED_HOST" in environ:
        return str(environ["HTTP_X_FORWARDED_HOST"])
    if "HTTP_HOST" in environ:
        return str(environ["HTTP_HOST"])
    host = str(environ.get("SERVER_NAME", ""))
    port = str(environ.get("SERVER_PORT", ""))
    if port != ("443" if environ.get("wsgi.url_scheme") == "https" else "80"):
        host = f"{host}:{port}"
    return host


def _security_headers() -> dict[str, dict[str, str]]:
    """SecurityMiddleware's response headers, for plain HTTP and HTTPS."""
    headers: dict[str, str] = {}
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers["X-Content-Type-Options"] = "nosniff"
    if settings.SECURE_REFERRER_POLICY:
        policy = settings.SECURE_REFERRER_POLICY
        values = policy.split(",") if isinstance(policy, str) else policy
        headers["Referrer-Policy"] = ",".join(value.strip() for value in values)
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers["Cross-Origin-Opener-Policy"] = settings.SECURE_CROSS_ORIGIN_OPENER_POLICY
    https = dict(headers)
    if settings.SECURE_HSTS_SECONDS:
        hsts = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            hsts += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            hsts += "; preload"
        https["Strict-Transport-Security"] = hsts
    return {"http": headers, "https": https}
