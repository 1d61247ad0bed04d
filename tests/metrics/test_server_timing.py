import io
import json
import logging
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.core.cache import cache
from django.http.response import HttpResponseBase
from django.test import Client

from apps.metrics.logging import (
    JsonFormatter,
    JsonLinesHandler,
    RequestIdFilter,
    request_id_var,
    request_line_handler,
)
from apps.metrics.timing import current_ledger, request_ledger
from tests.helpers import BASE_DIR, PYTHON, subprocess_env

SERVER_TIMING = re.compile(
    r'^db;dur=(?P<db>[\d.]+);desc="(?P<queries>\d+) queries", '
    r'cache;dur=(?P<cache>[\d.]+);desc="(?P<calls>\d+) calls", '
    r"app;dur=(?P<app>[\d.]+)$"
)


def _timing(response: HttpResponseBase) -> dict[str, float]:
    match = SERVER_TIMING.match(response["Server-Timing"])
    assert match, response["Server-Timing"]
    return {key: float(value) for key, value in match.groupdict().items()}


def test_html_pages_carry_the_backend_breakdown(viewer_client: Client) -> None:
    response = viewer_client.get("/tokens/")
    assert response.status_code == 200
    timing = _timing(response)
    # The session (cached_db) and the token list are read from the cache and
    # the database.
    assert timing["queries"] >= 1 and timing["db"] > 0
    assert timing["calls"] >= 1 and timing["cache"] >= 0
    assert timing["app"] > 0


def test_api_responses_carry_it_too(read_token: str) -> None:
    response = Client().get("/api/v1/whoami", HTTP_AUTHORIZATION=f"Bearer {read_token}")
    assert response.status_code == 200
    assert _timing(response)["queries"] >= 1


@pytest.mark.django_db
def test_error_responses_carry_it(client: Client) -> None:
    response = client.get("/api/v1/whoami")
    assert response.status_code == 401
    assert "Server-Timing" in response


@pytest.mark.django_db
def test_nested_cache_calls_are_counted_once() -> None:
    with request_ledger() as ledger:
        cache.get_or_set("perfhub:test:nested", lambda: "value")
        cache.get("perfhub:test:nested")
    assert ledger.cache_calls == 2
    assert ledger.cache_depth == 0
    assert current_ledger() is None


@pytest.mark.django_db
def test_a_request_id_is_returned_and_an_upstream_one_is_kept(client: Client) -> None:
    fresh = client.get("/login/")
    assert re.fullmatch(r"[0-9a-f]{32}", fresh["X-Request-ID"])
    kept = client.get("/login/", HTTP_X_REQUEST_ID="lb-1234.abc")
    assert kept["X-Request-ID"] == "lb-1234.abc"
    # Anything that could forge a log line or a header is replaced.
    forged = client.get("/login/", HTTP_X_REQUEST_ID="x\nINFO fake line")
    assert re.fullmatch(r"[0-9a-f]{32}", forged["X-Request-ID"])


@pytest.mark.django_db
def test_one_json_log_line_per_request(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="perfhub.request"):
        response = client.get("/login/?key=secret-site-key")
    records = [r for r in caplog.records if r.name == "perfhub.request"]
    assert len(records) == 1
    RequestIdFilter().filter(records[0])
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["request_id"] == response["X-Request-ID"]
    assert line["method"] == "GET"
    assert line["path"] == "/login/"
    assert line["status"] == 200
    assert line["duration_ms"] >= 0
    assert line["level"] == "INFO"
    assert "secret-site-key" not in json.dumps(line)


ISO_MILLISECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")
REQUEST_FIELDS = {
    "method": "POST",
    "path": "/api/v1/vitals/collect",
    "status": 202,
    "duration_ms": 0.42,
    "user_id": None,
}


@contextmanager
def json_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of its own with a JSON console handler, as perfhub.settings
    configures the root logger's with PERFHUB_LOG_JSON on. It stops
    propagating only inside the block: pytest adds its capturing handler to
    every logger that does not propagate when a test phase starts."""
    stream = io.StringIO()
    handler = JsonLinesHandler(stream)
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("perfhub.test.json_lines")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def test_a_request_line_written_directly_is_the_line_logging_writes() -> None:
    token = request_id_var.set("req-1")
    with json_logger() as (logger, stream):
        handler = request_line_handler(logger, logging.INFO)
        assert isinstance(handler, JsonLinesHandler)
        handler.write_line(logger.name, logging.INFO, "POST /api/v1/vitals/collect 202 0.4ms", REQUEST_FIELDS)
        logger.handle(
            logger.makeRecord(
                logger.name,
                logging.INFO,
                __file__,
                0,
                "%s %s %s %.1fms",
                ("POST", "/api/v1/vitals/collect", 202, 0.42),
                None,
                extra=REQUEST_FIELDS,
            )
        )
    request_id_var.reset(token)
    direct, through_logging = (json.loads(line) for line in stream.getvalue().splitlines())
    assert ISO_MILLISECONDS.match(direct.pop("time"))
    assert ISO_MILLISECONDS.match(through_logging.pop("time"))
    assert direct == through_logging
    # Same keys in the same order, too.
    assert list(direct) == ["level", "logger", "message", *REQUEST_FIELDS, "request_id"]


def test_request_lines_go_through_logging_when_anything_else_would_see_them() -> None:
    with json_logger() as (logger, _):
        [handler] = logger.handlers
        assert request_line_handler(logger, logging.INFO) is handler

        # A second handler, as a test's caplog adds.
        other = logging.StreamHandler(io.StringIO())
        logger.addHandler(other)
        assert request_line_handler(logger, logging.INFO) is None
        logger.removeHandler(other)
        # A handler above it, reached by propagation.
        logger.propagate = True
        logging.getLogger("perfhub.test").addHandler(other)
        assert request_line_handler(logger, logging.INFO) is None
        logging.getLogger("perfhub.test").removeHandler(other)
        logger.propagate = False
        # A filter of the logger's, or another of the handler's.
        refuse_all = logging.Filter("nothing.matches")
        logger.addFilter(refuse_all)
        assert request_line_handler(logger, logging.INFO) is None
        logger.removeFilter(refuse_all)
        handler.addFilter(refuse_all)
        assert request_line_handler(logger, logging.INFO) is None
        handler.removeFilter(refuse_all)
        # A handler that would not write the line at this level.
        handler.setLevel(logging.WARNING)
        assert request_line_handler(logger, logging.INFO) is None
        handler.setLevel(logging.NOTSET)
        # Another formatter than JsonFormatter.
        handler.setFormatter(logging.Formatter("%(message)s"))
        assert request_line_handler(logger, logging.INFO) is None
        handler.setFormatter(JsonFormatter())
        assert request_line_handler(logger, logging.INFO) is handler


def test_the_request_log_writes_json_lines_with_perfhubs_logging() -> None:
    # PerfHub's own configuration, in a process of its own: the root
    # logger's one JSON handler writes the request lines directly.
    script = """
import django
django.setup()
import logging
from apps.metrics.logging import JsonLinesHandler, request_line_handler
from apps.metrics.middleware import RequestInstruments, request_logger
from apps.metrics.timing import request_ledger
print("direct:", isinstance(request_line_handler(request_logger, logging.INFO), JsonLinesHandler))
with request_ledger() as ledger:
    pass
RequestInstruments().record(
    view="vitals-collect", method="POST", path="/api/v1/vitals/collect", status=202,
    seconds=0.00042, ledger=ledger, secure=False,
)
"""
    result = subprocess.run(
        [str(PYTHON), "-c", script],
        cwd=BASE_DIR,
        env=subprocess_env(
            DJANGO_SETTINGS_MODULE="perfhub.settings", PERFHUB_LOG_JSON="True", PERFHUB_LOG_LEVEL="INFO"
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # The line took the direct way, not logging's.
    assert result.stdout.splitlines() == ["direct: True"]
    lines = [json.loads(line) for line in result.stderr.splitlines() if '"perfhub.request"' in line]
    assert len(lines) == 1, result.stderr
    [line] = lines
    assert ISO_MILLISECONDS.match(line.pop("time"))
    assert line == {
        "level": "INFO",
        "logger": "perfhub.request",
        "message": "POST /api/v1/vitals/collect 202 0.4ms",
        **REQUEST_FIELDS,
        "request_id": "-",
    }


def test_a_json_line_holds_any_extra_value() -> None:
    def record(**extra: object) -> logging.LogRecord:
        return logging.getLogger("perfhub.test").makeRecord(
            "perfhub.test", logging.INFO, __file__, 0, "moved %s", ("rows",), None, extra=extra
        )

    # Past orjson's 64 bits, the json module writes it; neither encodes a
    # Path, which is written as str() has it.
    line = json.loads(JsonFormatter().format(record(rows=2**70, target=Path("/var/backups/perfhub.dump"))))
    assert (line["message"], line["rows"], line["target"]) == ("moved rows", 2**70, "/var/backups/perfhub.dump")

    line = json.loads(JsonFormatter().format(record(target=Path("/var/backups/perfhub.dump"))))
    assert (line["message"], line["target"]) == ("moved rows", "/var/backups/perfhub.dump")


def test_log_records_carry_the_id_of_the_process_that_made_them() -> None:
    def record() -> logging.LogRecord:
        return logging.getLogger("perfhub.test").makeRecord("perfhub.test", logging.INFO, __file__, 0, "x", (), None)

    assert record().process == os.getpid()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the child reports its records' pid and leaves at once
        os.write(write_end, str(record().process).encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(child, 0)
    with os.fdopen(read_end) as reported:
        assert int(reported.read()) == child
