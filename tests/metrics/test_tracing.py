"""Tracing runs in a subprocess: instrumenting installs process-wide hooks
(a global tracer provider, patched database drivers) that must be in place
before the first connection, and must not leak into the other tests."""

import json
import subprocess

import pytest

from tests.helpers import BASE_DIR, PYTHON, subprocess_env

SCRIPT = """
import json, os
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from perfhub.telemetry import configure_tracing

exporter = InMemorySpanExporter()
configure_tracing(span_processor=SimpleSpanProcessor(exporter))

import django
django.setup()
from django.test import Client

probe = Client().get("/readyz", HTTP_HOST="10.1.2.3")
response = Client().get(
    "/api/v1/whoami",
    HTTP_AUTHORIZATION="Bearer " + os.environ["TOKEN"],
    HTTP_TRACEPARENT="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
)
spans = [
    {
        "name": s.name,
        "kind": s.kind.name,
        "trace_id": format(s.context.trace_id, "032x"),
        "span_id": s.context.span_id,
        "parent_id": s.parent.span_id if s.parent else None,
        "attributes": dict(s.attributes or {}),
        "service": s.resource.attributes.get("service.name"),
    }
    for s in exporter.get_finished_spans()
]
print(json.dumps({"probe": probe.status_code, "status": response.status_code, "spans": spans}, default=str))
"""


@pytest.mark.django_db(transaction=True)
def test_a_request_span_has_a_database_child_span(read_token: str) -> None:
    result = subprocess.run(
        [PYTHON, "-c", SCRIPT],
        cwd=BASE_DIR,
        env=subprocess_env(TOKEN=read_token, ALLOWED_HOSTS="testserver"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == 200
    # Probes by pod IP still bypass host validation with tracing on, and are
    # not traced.
    assert report["probe"] == 200
    spans = report["spans"]
    server = [s for s in spans if s["kind"] == "SERVER"]
    assert len(server) == 1, spans
    request_span = server[0]
    assert request_span["service"] == "perfhub"
    # The stable HTTP semantic conventions are opt-in; this is the old name.
    assert request_span["attributes"]["http.method"] == "GET"
    assert request_span["name"] == "GET api/v1/whoami"
    # The incoming traceparent is continued, so PerfHub's spans join the
    # caller's trace.
    assert request_span["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    db_children = [
        s
        for s in spans
        if s["parent_id"] == request_span["span_id"]
        and ("db.system" in s["attributes"] or "db.system.name" in s["attributes"])
    ]
    assert db_children, spans
    assert any(
        "SELECT" in str(s["attributes"].get("db.statement", s["attributes"].get("db.query.text", "")))
        for s in db_children
    )


def test_tracing_stays_off_without_otel_variables() -> None:
    script = "from perfhub.telemetry import configure_tracing; print(configure_tracing() is None)"
    env = {k: v for k, v in subprocess_env().items() if not k.startswith("OTEL_")}
    result = subprocess.run([PYTHON, "-c", script], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "True", result.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER must be otlp, console or none"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"},
            "OTEL_EXPORTER_OTLP_PROTOCOL must be grpc or http/protobuf",
        ),
    ],
)
def test_a_mistyped_exporter_stops_start_up_with_a_clear_message(env: dict[str, str], message: str) -> None:
    script = "from perfhub.telemetry import configure_tracing; configure_tracing()"
    result = subprocess.run(
        [PYTHON, "-c", script], cwd=BASE_DIR, env=subprocess_env(**env), capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert message in result.stderr
