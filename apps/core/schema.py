"""Tells drf-spectacular how PerfHub's API tokens authenticate, so the
OpenAPI schema (and Swagger UI's Authorize button) documents them."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "apps.core.authentication.ApiTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token from the API tokens page: `Authorization: Bearer phk_…`.",
        }
