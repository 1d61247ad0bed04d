import io

import pytest
import yaml
from django.core.management import call_command
from django.test import Client


def test_the_openapi_schema_is_valid_and_documents_token_auth() -> None:
    out = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)
    schema = yaml.safe_load(out.getvalue())
    assert schema["info"]["title"] == "PerfHub API"
    assert schema["components"]["securitySchemes"]["apiToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token from the API tokens page: `Authorization: Bearer phk_…`.",
    }
    assert "/api/v1/performance/metrics" in schema["paths"]


def test_the_schema_endpoint_needs_authentication(read_token: str) -> None:
    assert Client().get("/api/v1/schema/").status_code == 401
    response = Client().get("/api/v1/schema/", HTTP_AUTHORIZATION=f"Bearer {read_token}")
    assert response.status_code == 200
    assert b"PerfHub API" in response.content


@pytest.mark.django_db
def test_swagger_ui_loads_its_script_from_a_file(owner_client: Client) -> None:
    script = owner_client.get("/api/v1/docs/?script=")
    assert script.status_code == 200
    assert "SwaggerUIBundle" in script.content.decode()
