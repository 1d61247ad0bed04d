from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET
from django_htmx.middleware import HtmxDetails
from django_prometheus.exports import ExportToDjangoView
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.views import APIView

from apps.core.permissions import StaffRequest, staff_required
from apps.metrics.ops import LATENCY_BUCKET_BOUNDS_MS, PROMETHEUS_RANGE_SECONDS
from apps.metrics.selectors import ops_panels

# How often the ops panels refresh while the page is visible.
OPS_POLL_SECONDS = 5


class HtmxStaffRequest(StaffRequest):
    htmx: HtmxDetails


class PrometheusMetricsView(APIView):
    """Prometheus text exposition. Under gunicorn the registry is the
    multiprocess one (PROMETHEUS_MULTIPROC_DIR), so every counter is the sum
    over all workers, whichever worker answers the scrape."""

    @extend_schema(
        summary="Prometheus metrics",
        responses={
            (200, "text/plain"): OpenApiResponse(OpenApiTypes.STR, description="Prometheus text exposition format")
        },
    )
    def get(self, request: Request) -> HttpResponse:
        response = ExportToDjangoView(request)
        response["Cache-Control"] = "no-store"
        return response


@staff_required
@require_GET
def ops(request: HtmxStaffRequest) -> HttpResponse:
    panels = ops_panels()
    context = {
        "overview": panels.overview,
        "insight": panels.query_insight,
        "poll_seconds": OPS_POLL_SECONDS,
        "bucket_bounds_ms": LATENCY_BUCKET_BOUNDS_MS,
        "prometheus_range_minutes": PROMETHEUS_RANGE_SECONDS // 60,
    }
    template = "metrics/ops.html#panels" if request.htmx else "metrics/ops.html"
    response = render(request, template, context)
    response["Cache-Control"] = "no-store"
    return response
