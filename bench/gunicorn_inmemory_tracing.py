"""gunicorn settings for bench/overhead.py's instrumented server: PerfHub's
own settings and hooks (perfhub/gunicorn_conf.py), with tracing on and the
spans exported to memory instead of to a collector.

Spans go through a BatchSpanProcessor, as they do in production (it is what
perfhub.telemetry uses for every exporter named by OTEL_*): the request only
queues its span and a background thread hands batches to the exporter, so
the bench measures the cost a deployment pays, minus the network.
"""

from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from perfhub import gunicorn_conf

# Every setting and hook of the production config; post_fork and worker_exit
# are replaced below (hence mypy's no-redef).
from perfhub.gunicorn_conf import *  # noqa: F403

# A run exports tens of thousands of spans per worker. Kept without a bound
# they would grow the worker for the whole run, a cost no real exporter has;
# past the bound the deque drops the oldest span.
MAX_SPANS_KEPT = 2048


class CountingInMemorySpanExporter(InMemorySpanExporter):
    """Counts the spans it was given, including those the bound dropped, so
    that the bench can compare them with the requests it sent."""

    def __init__(self) -> None:
        super().__init__(max_spans=MAX_SPANS_KEPT)
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        # The batch processor makes every export call under one lock, so
        # the count needs none of its own.
        self.exported += len(spans)
        return super().export(spans)


_exporter: CountingInMemorySpanExporter | None = None


def post_fork(server: Any, worker: Any) -> None:  # type: ignore[no-redef]
    from perfhub.telemetry import configure_tracing

    global _exporter
    # Created after the fork: each worker counts its own spans.
    _exporter = CountingInMemorySpanExporter()
    configure_tracing(span_processor=BatchSpanProcessor(_exporter))


def worker_exit(server: Any, worker: Any) -> None:  # type: ignore[no-redef]
    gunicorn_conf.worker_exit(server, worker)  # flushes the spans still queued
    exported = _exporter.exported if _exporter is not None else 0
    # bench/overhead.py reads this line to check that tracing was on.
    server.log.info("bench tracing: worker %s exported %d spans", worker.pid, exported)
