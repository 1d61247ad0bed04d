from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.models import ApiToken


class WhoAmIView(APIView):
    """Who the API sees: lets a script or a Grafana data source check its
    token before it relies on it."""

    @extend_schema(
        summary="The authenticated user and token",
        responses=inline_serializer(
            "WhoAmI",
            fields={
                "username": serializers.CharField(),
                "is_staff": serializers.BooleanField(),
                "is_superuser": serializers.BooleanField(),
                "token": inline_serializer(
                    "WhoAmIToken",
                    fields={"name": serializers.CharField(), "scope": serializers.CharField()},
                    allow_null=True,
                ),
                "server_time": serializers.DateTimeField(),
            },
        ),
    )
    def get(self, request: Request) -> Response:
        token = request.auth if isinstance(request.auth, ApiToken) else None
        return Response(
            {
                "username": request.user.get_username(),
                "is_staff": request.user.is_staff,
                "is_superuser": request.user.is_superuser,
                "token": {"name": token.name, "scope": token.scope} if token else None,
                "server_time": timezone.now(),
            }
        )
