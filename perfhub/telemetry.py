"""OpenTelemetry tracing, on only when the standard OTEL_* variables ask.

Called after fork (gunicorn's post_fork hook, the worker command's start):
the batch span processor runs a background thread, and threads do not
survive a fork.
"""

import os
from collections.abc import Callable

from django.core.exceptions import ImproperlyConfigured
from opentelemetry import trace
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter, SpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)

from apps.metrics.tracing import DecidedIdGenerator
from perfhub.env import env_bool, env_float, env_str

DEFAULT_SERVICE_NAME = "perfhub"
_OTEL_MIDDLEWARE = "opentelemetry.instrumentation.django.middleware.otel_middleware._DjangoMiddleware"
# One request in ten starts a trace; a request that arrives with a sampled
# traceparent is always traced (parent-based), so a caller's traces stay
# whole. A traced request costs about 15% more CPU than an untraced one
# (bench/instructions.py with --traces-sampler always_on, then
# --traces-sampler-arg 0).
DEFAULT_SAMPLER = "parentbased_traceidratio"
DEFAULT_SAMPLER_RATIO = 0.1
# Scrapes and probes come every few seconds and tell nothing a trace would.
DEFAULT_EXCLUDED_URLS = "^/livez$,^/readyz$,^/api/v1/performance/metrics$"


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


def sampler_from_env() -> Sampler:
    """The head sampler named by OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG
    (the SDK's own names). Read here rather than by the SDK, which falls back
    to always-on with a log line when a value is mistyped: here it stops the
    start-up."""
    name = env_str("OTEL_TRACES_SAMPLER", DEFAULT_SAMPLER).lower()
    roots: dict[str, Callable[[], Sampler]] = {
        "always_on": lambda: ALWAYS_ON,
        "always_off": lambda: ALWAYS_OFF,
        "traceidratio": lambda: TraceIdRatioBased(
            env_float("OTEL_TRACES_SAMPLER_ARG", DEFAULT_SAMPLER_RATIO, minimum=0.0, maximum=1.0)
        ),
    }
    parent_based = name.startswith("parentbased_")
    root = roots.get(name.removeprefix("parentbased_"))
    if root is None:
        raise ImproperlyConfigured(
            "OTEL_TRACES_SAMPLER must be always_on, always_off, traceidratio, parentbased_always_on, "
            f"parentbased_always_off or parentbased_traceidratio, not {name!r}."
        )
    return ParentBased(root()) if parent_based else root()


def configure_tracing(*, span_processor: SpanProcessor | None = None) -> TracerProvider | None:
    """Install a tracer provider with the head sampler from the environment
    and instrument Django and redis. SQL spans come from PerfHub's
    instrumented database backends (apps.metrics.db.cursor), which replace
    OpenTelemetry's psycopg and sqlite3 instrumentations. ``span_processor``
    replaces the exporters from the environment (tests pass an in-memory
    one). Returns the provider, or None when tracing is off."""
    if span_processor is None and not tracing_requested():
        return None
    os.environ.setdefault("OTEL_SERVICE_NAME", DEFAULT_SERVICE_NAME)
    # DjangoInstrumentor edits settings.MIDDLEWARE, and gunicorn's post_fork
    # runs before perfhub.wsgi has named the settings module.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "perfhub.settings")
    os.environ.setdefault("OTEL_PYTHON_DJANGO_EXCLUDED_URLS", DEFAULT_EXCLUDED_URLS)
    provider = TracerProvider(resource=Resource.create(), sampler=sampler_from_env(), id_generator=DecidedIdGenerator())
    if span_processor is not None:
        provider.add_span_processor(span_processor)
    else:
        for exporter in _exporters_from_env():
            provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    DjangoInstrumentor().instrument(
        tracer_provider=provider, excluded_urls=os.environ["OTEL_PYTHON_DJANGO_EXCLUDED_URLS"]
    )
    _sample_before_tracing()
    RedisInstrumentor().instrument(tracer_provider=provider)
    return provider


def _sample_before_tracing() -> None:
    """DjangoInstrumentor puts its middleware first; put ours, which takes the
    sampling decision and hands only sampled requests to it, in its place
    (apps.metrics.tracing). It answers probes without touching the Host
    header, so the probe middleware, which must run before host validation,
    can stay right behind it."""
    from django.conf import settings

    if _OTEL_MIDDLEWARE not in settings.MIDDLEWARE:
        return  # OTEL_PYTHON_DJANGO_INSTRUMENT=False
    middleware = [m for m in settings.MIDDLEWARE if m != _OTEL_MIDDLEWARE]
    settings.MIDDLEWARE = ["apps.metrics.tracing.SampledTracingMiddleware", *middleware]


def shutdown_tracing() -> None:
    """Flush spans still queued (gunicorn's worker_exit)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()
