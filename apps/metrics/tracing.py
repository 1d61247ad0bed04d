"""Head sampling in front of OpenTelemetry's Django middleware.

With a head sampler most requests are not sampled, yet OpenTelemetry's
Django middleware does nearly all of its work for them anyway: it builds the
absolute URI three times, collects every request attribute, resolves the
URL for the span name and records its metrics, and then the database and
redis instrumentations open a non-recording span around every query. This
middleware takes the sampler's decision first, with the trace id the span
would get:

- sampled: the request goes through OpenTelemetry's middleware, unchanged;
- not sampled, or an excluded path: the request runs under a non-recording
  span that carries the trace id (children stay unsampled, as a parent-based
  sampler wants) with instrumentation suppressed, so no instrumentation
  library does any span work for it.

perfhub.telemetry.configure_tracing puts it where DjangoInstrumentor put its
own middleware, first in MIDDLEWARE.
"""

import functools
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from django.http import HttpRequest, HttpResponse
from opentelemetry import context, trace
from opentelemetry.instrumentation.django.middleware.otel_middleware import _DjangoMiddleware
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.instrumentation.wsgi import wsgi_getter
from opentelemetry.propagate import extract
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.util.http import get_excluded_urls

# The trace id the sampler was asked about, handed to the tracer when
# OpenTelemetry's middleware starts the span: a trace-id-ratio sampler then
# takes the same decision a second time instead of drawing again (which
# would sample ratio² of the requests).
_decided_trace_id: ContextVar[int | None] = ContextVar("perfhub_decided_trace_id", default=None)

# Set on sampled requests, so that the view and exception hooks reach
# OpenTelemetry's middleware only for them.
_SAMPLED_ATTR = "_perfhub_trace_sampled"

# Probes come many times a minute by pod IP: never traced, whatever
# OTEL_PYTHON_DJANGO_EXCLUDED_URLS says, and never through OpenTelemetry's
# middleware, which validates the Host header.
_PROBE_PATHS = frozenset({"/livez", "/readyz"})

# Whether a path is excluded is remembered for this many recent paths:
# OpenTelemetry's check was a tenth of an untraced request's tracing cost
# (its re.search goes through re's cache, which raises and catches a
# KeyError for a compiled pattern every time), and a worker sees few paths
# again and again. Bounded, since paths are whatever clients send (gunicorn
# caps a request line at 4 KiB).
_EXCLUDED_PATHS_REMEMBERED = 256

_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)


class DecidedIdGenerator(RandomIdGenerator):
    """Random ids, except the trace id of a span the middleware below has
    already sampled."""

    def generate_trace_id(self) -> int:
        decided = _decided_trace_id.get()
        if decided is not None:
            _decided_trace_id.set(None)
            return decided
        return super().generate_trace_id()


class SampledTracingMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.traced = _DjangoMiddleware(get_response)
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            raise TypeError("SampledTracingMiddleware needs the SDK's TracerProvider (perfhub.telemetry)")
        self.sampler = provider.sampler
        self.id_generator = provider.id_generator
        # OTEL_PYTHON_DJANGO_EXCLUDED_URLS (perfhub.telemetry sets its
        # default), regexes searched in the path: unlike OpenTelemetry's
        # middleware, which searches the absolute URI, this needs no Host
        # header validation before the decision.
        self.path_excluded = functools.lru_cache(maxsize=_EXCLUDED_PATHS_REMEMBERED)(
            get_excluded_urls("DJANGO").url_disabled
        )

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path
        parent = extract(request.META, getter=wsgi_getter)
        parent_span_context = trace.get_current_span(parent).get_span_context()
        if parent_span_context.is_valid:
            trace_id = parent_span_context.trace_id
        else:
            trace_id = self.id_generator.generate_trace_id()
        if path not in _PROBE_PATHS and not self.path_excluded(path):
            # Built-in samplers read only the parent and the trace id; the
            # name is OpenTelemetry's fallback for a span without a route.
            decision = self.sampler.should_sample(parent, trace_id, request.method or "HTTP", SpanKind.SERVER)
            if decision.decision is Decision.RECORD_AND_SAMPLE:
                setattr(request, _SAMPLED_ATTR, True)
                if parent_span_context.is_valid:
                    return self.traced(request)
                decided = _decided_trace_id.set(trace_id)
                try:
                    return self.traced(request)
                finally:
                    _decided_trace_id.reset(decided)
        unsampled = SpanContext(
            trace_id=trace_id,
            span_id=self.id_generator.generate_span_id(),
            is_remote=False,
            trace_flags=_NOT_SAMPLED,
            trace_state=parent_span_context.trace_state,
        )
        token = context.attach(trace.set_span_in_context(NonRecordingSpan(unsampled), parent))
        try:
            with suppress_instrumentation():
                return self.get_response(request)
        finally:
            context.detach(token)

    def process_view(self, request: HttpRequest, view_func: Any, view_args: Any, view_kwargs: Any) -> None:
        if getattr(request, _SAMPLED_ATTR, False):
            self.traced.process_view(request, view_func, view_args, view_kwargs)

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        if getattr(request, _SAMPLED_ATTR, False):
            self.traced.process_exception(request, exception)
