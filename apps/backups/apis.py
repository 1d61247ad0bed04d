from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.permissions import IsAdminOrAdminToken


class BackupCreateView(APIView):
    """Start a backup. Until the backups issue builds them, it checks who may
    ask (an administrator; session users also need the CSRF token, which DRF's
    SessionAuthentication enforces) and answers 503 "backups not configured",
    as DESIGN.md allows."""

    permission_classes = [IsAdminOrAdminToken]

    @extend_schema(
        summary="Start a backup",
        request=None,
        responses={
            503: OpenApiResponse(
                inline_serializer(
                    "BackupNotConfigured",
                    {"detail": serializers.CharField(), "hint": serializers.CharField()},
                ),
                description="Backups are not configured in this version of PerfHub.",
            ),
        },
        description="Will answer 202 with the backup job and a URL to poll once backups exist; "
        "until then 503 `backups not configured`. Administrators only.",
    )
    def post(self, request: Request) -> Response:
        return Response(
            {
                "detail": "backups not configured",
                "hint": "This version of PerfHub cannot take backups yet; use pg_dump on the database meanwhile.",
            },
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
