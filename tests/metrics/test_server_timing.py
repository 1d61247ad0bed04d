import json
import logging
import os
import re
from pathlib import Path

import pytest
from django.core.cache import cache
from django.http.response import HttpResponseBase
from django.test import Client

from apps.metrics.logging import JsonFormatter, RequestIdFilter
from apps.metrics.timing import current_ledger, request_ledger

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
