"""OpenTelemetry tracing, on only when the standard OTEL_* variables ask.

Called after fork (gunicorn's post_fork hook, the worker command's start):
the batch span processor runs a background thread, and threads do not
survive a fork.
"""

import os

from django.core.exceptions import ImproperlyConfigured
from opentelemetry import trace
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter, SpanProcessor

from perfhub.env import env_bool, env_str

DEFAULT_SERVICE_NAME = "perfhub"


def tracing_requested() -> bool:
    """True when the environment names a trace exporter: OTEL_TRACES_EXPORTER
    other than ``none``, or an OTLP endpoint."""
    if env_bool("OTEL_SDK_DISABLED", False):
        return False
    exporters = env_str("OTEL_TRACES_EXPORTER").lower()
    if exporters:
        return exporters != "none"
    return bool(env_str("OTEL_EXPORTER_OTLP_ENDPOINT") or env_str("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def _exporters_from_env() -> list[SpanExporter]:
    exporters: list[SpanExporter] = []
    for name in (env_str("OTEL_TRACES_EXPORTER") or "otlp").lower().split(","):
        name = name.strip()
        if name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            protocol = env_str("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env_str(
                "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
            )
            if protocol == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

                exporters.append(GrpcExporter())
            elif protocol == "http/protobuf":
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

                exporters.append(HttpExporter())
            else:
                raise ImproperlyConfigured(
                    f"OTEL_EXPORTER_OTLP_PROTOCOL must be grpc or http/protobuf, not {protocol!r}."
                )
        elif name and name != "none":
            raise ImproperlyConfigured(f"OTEL_TRACES_EXPORTER must be otlp, console or none, not {name!r}.")
    return exporters


def configure_tracing(*, span_processor: SpanProcessor | None = None) -> TracerProvider | None:
    """Install a tracer provider and instrument Django, psycopg, redis and
    sqlite3. ``span_processor`` replaces the exporters from the environment
    (tests pass an in-memory one). Returns the provider, or None when tracing
    is off."""
    if span_processor is None and not tracing_requested():
        return None
    os.environ.setdefault("OTEL_SERVICE_NAME", DEFAULT_SERVICE_NAME)
    # DjangoInstrumentor edits settings.MIDDLEWARE, and gunicorn's post_fork
    # runs before perfhub.wsgi has named the settings module.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "perfhub.settings")
    provider = TracerProvider(resource=Resource.create())
    if span_processor is not None:
        provider.add_span_processor(span_processor)
    else:
        for exporter in _exporters_from_env():
            provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    DjangoInstrumentor().instrument(tracer_provider=provider)
    _keep_probes_first()
    PsycopgInstrumentor().instrument(tracer_provider=provider)
    RedisInstrumentor().instrument(tracer_provider=provider)
    SQLite3Instrumentor().instrument(tracer_provider=provider)
    return provider


def _keep_probes_first() -> None:
    """DjangoInstrumentor puts its middleware first, and that middleware
    validates the Host header. Probes come by pod IP and must be answered
    before any host check (and need no traces), so the probe middleware is
    moved back in front."""
    from django.conf import settings

    probe = "apps.resilience.middleware.ProbeMiddleware"
    middleware = list(settings.MIDDLEWARE)
    if probe in middleware:
        middleware.remove(probe)
        settings.MIDDLEWARE = [probe, *middleware]


def shutdown_tracing() -> None:
    """Flush spans still queued (gunicorn's worker_exit)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()
