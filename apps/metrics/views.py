from django.http import HttpResponse
from django_prometheus.exports import ExportToDjangoView
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.views import APIView


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
