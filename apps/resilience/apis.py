from typing import Any

from django.db import DatabaseError
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.permissions import IsAdminOrAdminToken, IsStaffOrReadToken
from apps.resilience.health import health_report
from apps.resilience.models import BreakerReset
from apps.resilience.selectors import resilience_overview
from apps.resilience.serializers import (
    HealthSerializer,
    ResetInputSerializer,
    ResetOutputSerializer,
    ResilienceSerializer,
)
from apps.resilience.services import UnknownBreakers, breakers_reset

_ERROR = inline_serializer(
    "ResilienceError", fields={"error": serializers.CharField(), "field": serializers.CharField()}
)


class DatabaseDownIs503(APIView):
    """Authentication itself needs the database (tokens, users): when it is
    unreachable, these endpoints answer 503 saying so instead of a 500. This
    reveals no more than the unauthenticated /readyz does."""

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, DatabaseError):
            response = Response(
                self.database_down_body(f"{type(exc).__name__}: {exc}".strip()[:500]),
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
            )
            response["Cache-Control"] = "no-store"
            response["Retry-After"] = "30"
            return response
        return super().handle_exception(exc)

    def database_down_body(self, message: str) -> dict[str, Any]:
        return {"error": f"the database is unreachable: {message}", "field": None}


class HealthView(DatabaseDownIs503):
    permission_classes = [IsStaffOrReadToken]

    def database_down_body(self, message: str) -> dict[str, Any]:
        return {
            "status": "down",
            "checks": [{"name": "database", "status": "down", "latency_ms": 0.0, "message": message}],
        }

    @extend_schema(
        summary="Health of PerfHub and its dependencies",
        description="Each check with status (ok, degraded, down, skipped), latency and message. "
        "200 when healthy (every check ok, degraded or skipped), 503 when any check is down.",
        responses={200: HealthSerializer, 503: HealthSerializer},
    )
    def get(self, request: Request) -> Response:
        report = health_report()
        response = Response(
            HealthSerializer(report).data,
            status=status.HTTP_200_OK if report.healthy else status.HTTP_503_SERVICE_UNAVAILABLE,
        )
        response["Cache-Control"] = "no-store"
        return response


class ResilienceView(DatabaseDownIs503):
    permission_classes = [IsStaffOrReadToken]

    @extend_schema(
        summary="Circuit breakers and degradation modes",
        responses=ResilienceSerializer,
    )
    def get(self, request: Request) -> Response:
        return Response(ResilienceSerializer(resilience_overview()).data)


class ResetCircuitBreakersView(DatabaseDownIs503):
    permission_classes = [IsAdminOrAdminToken]

    @extend_schema(
        summary="Close circuit breakers",
        description="Closes the named breakers (all when `breakers` is omitted or empty) and records "
        "who did it. Session users must send the CSRF token.",
        request=ResetInputSerializer,
        responses={200: ResetOutputSerializer, 400: OpenApiResponse(_ERROR, description="unknown breaker names")},
    )
    def post(self, request: Request) -> Response:
        incoming = ResetInputSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        try:
            reset = breakers_reset(
                user=request.user, names=incoming.validated_data.get("breakers"), via=BreakerReset.Via.API
            )
        except UnknownBreakers as exc:
            return Response({"error": str(exc), "field": "breakers", "unknown": exc.names}, status=400)
        body: dict[str, Any] = {"reset": [b.name for b in reset], "breakers": [b.status() for b in reset]}
        return Response(ResetOutputSerializer(body).data)
