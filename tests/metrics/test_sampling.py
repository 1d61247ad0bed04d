"""Head sampling (perfhub.telemetry.sampler_from_env, apps.metrics.tracing).

The request tests run in a subprocess, as in test_tracing.py: tracing
installs process-wide hooks that must not leak into other tests."""

import json
import subprocess
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

from perfhub.telemetry import sampler_from_env
from tests.helpers import BASE_DIR, PYTHON, subprocess_env

SAMPLED_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
UNSAMPLED_PARENT = "00-1bf7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"

# Sends the requests listed in $REQUESTS ([label, path, traceparent or ""])
# and prints, per label, the spans each one exported.
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

report = {}
for label, path, traceparent in json.loads(os.environ["REQUESTS"]):
    headers = {"HTTP_AUTHORIZATION": "Bearer " + os.environ["TOKEN"]}
    if traceparent:
        headers["HTTP_TRACEPARENT"] = traceparent
    response = Client().get(path, HTTP_HOST="10.1.2.3" if path in ("/livez", "/readyz") else "testserver", **headers)
    report.setdefault(label, []).append({
        "status": response.status_code,
        "spans": [
            {
                "kind": s.kind.name,
                "trace_id": s.context.trace_id,
                "span_id": s.context.span_id,
                "parent_id": s.parent.span_id if s.parent else None,
                "db": "db.system" in (s.attributes or {}),
            }
            for s in exporter.get_finished_spans()
        ],
    })
    exporter.clear()
print(json.dumps(report))
"""


def _run(token: str, requests: list[tuple[str, str, str]], **env: str) -> dict[str, list[dict[str, Any]]]:
    result = subprocess.run(
        [PYTHON, "-c", SCRIPT],
        cwd=BASE_DIR,
        env=subprocess_env(TOKEN=token, ALLOWED_HOSTS="testserver", REQUESTS=json.dumps(requests), **env),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, list[dict[str, Any]]] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def test_the_default_samples_one_trace_in_ten_and_follows_the_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    monkeypatch.delenv("OTEL_TRACES_SAMPLER_ARG", raising=False)
    description = sampler_from_env().get_description()
    assert description.startswith("ParentBased{root:TraceIdRatioBased{0.1}")


@pytest.mark.parametrize(
    ("name", "arg", "description"),
    [
        ("always_on", "", "AlwaysOnSampler"),
        ("parentbased_always_off", "", "ParentBased{root:AlwaysOffSampler"),
        ("traceidratio", "0.25", "TraceIdRatioBased{0.25}"),
        ("PARENTBASED_TRACEIDRATIO", "1", "ParentBased{root:TraceIdRatioBased{1.0}"),
    ],
)
def test_the_standard_variables_choose_the_sampler(
    monkeypatch: pytest.MonkeyPatch, name: str, arg: str, description: str
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", name)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", arg)
    assert sampler_from_env().get_description().startswith(description)


@pytest.mark.parametrize(
    ("name", "arg", "message"),
    [
        ("jaeger_remote", "", "OTEL_TRACES_SAMPLER must be always_on"),
        ("traceidratio", "1.5", "OTEL_TRACES_SAMPLER_ARG must be between 0.0 and 1.0"),
        ("parentbased_traceidratio", "ten percent", "OTEL_TRACES_SAMPLER_ARG must be a number"),
    ],
)
def test_a_mistyped_sampler_stops_start_up(monkeypatch: pytest.MonkeyPatch, name: str, arg: str, message: str) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", name)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", arg)
    with pytest.raises(ImproperlyConfigured, match=message):
        sampler_from_env()


@pytest.mark.django_db(transaction=True)
def test_unsampled_requests_export_nothing_and_a_sampled_parent_is_continued(read_token: str) -> None:
    report = _run(
        read_token,
        [
            ("root", "/api/v1/whoami", ""),
            ("unsampled parent", "/api/v1/whoami", UNSAMPLED_PARENT),
            ("sampled parent", "/api/v1/whoami", SAMPLED_PARENT),
        ],
        OTEL_TRACES_SAMPLER="parentbased_traceidratio",
        OTEL_TRACES_SAMPLER_ARG="0",
    )
    assert [r["status"] for rs in report.values() for r in rs] == [200, 200, 200]
    # Not even the SQL query of a request left unsampled is exported.
    assert report["root"][0]["spans"] == []
    assert report["unsampled parent"][0]["spans"] == []
    spans = report["sampled parent"][0]["spans"]
    server = [s for s in spans if s["kind"] == "SERVER"]
    assert len(server) == 1
    assert format(server[0]["trace_id"], "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert any(s["db"] and s["parent_id"] == server[0]["span_id"] for s in spans), spans


@pytest.mark.django_db(transaction=True)
def test_excluded_paths_and_probes_export_no_spans(read_token: str) -> None:
    report = _run(
        read_token,
        [
            ("metrics", "/api/v1/performance/metrics", SAMPLED_PARENT),
            ("livez", "/livez", SAMPLED_PARENT),
            ("readyz", "/readyz", ""),
            ("whoami", "/api/v1/whoami", ""),
        ],
        OTEL_TRACES_SAMPLER="always_on",
    )
    # Probes by pod IP are answered without host validation.
    assert report["livez"][0]["status"] == report["readyz"][0]["status"] == 200
    for label in ("metrics", "livez", "readyz"):
        assert report[label][0]["spans"] == [], label
    # The control: with the same sampler, other paths are traced.
    assert any(s["kind"] == "SERVER" for s in report["whoami"][0]["spans"])


@pytest.mark.django_db(transaction=True)
def test_a_ratio_sampler_decides_once_per_request(read_token: str) -> None:
    report = _run(read_token, [("whoami", "/api/v1/whoami", "")] * 40, OTEL_TRACES_SAMPLER_ARG="0.5")
    requests = report["whoami"]
    sampled = [r["spans"] for r in requests if r["spans"]]
    # 40 draws at one half: all or none has a chance of 2 in 10**12.
    assert 0 < len(sampled) < len(requests)
    bound = TraceIdRatioBased.get_bound_for_rate(0.5)
    for spans in sampled:
        server = [s for s in spans if s["kind"] == "SERVER"]
        assert len(server) == 1, spans
        # The span's trace id is the one the middleware sampled: the SDK's
        # own ratio test passes for it (a second, independent draw would
        # fail it half of the time).
        assert server[0]["trace_id"] & TraceIdRatioBased.TRACE_ID_LIMIT < bound
        # Every span of a sampled request belongs to its trace.
        assert {s["trace_id"] for s in spans} == {server[0]["trace_id"]}
