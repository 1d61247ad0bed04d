import json
import time
from typing import Any

from django.conf import settings
from django.core.handlers.wsgi import WSGIRequest
from django.http import HttpResponse
from django.test import Client
from django.test.client import ClientHandler

from apps.vitals.models import Site
from apps.vitals.services import metrics_store
from apps.vitals.stream import StreamConsumer
from apps.vitals.wsgi import BeaconApplication

CHROME_DESKTOP = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
ORIGIN = "https://shop.example.com"


class _BeaconHandler(ClientHandler):
    """Django's test handler behind BeaconApplication, as perfhub.wsgi puts
    Django's WSGI handler behind it. A new BeaconApplication per request, so
    that it reads the settings a test has overridden."""

    def __call__(self, environ: dict[str, Any]) -> Any:  # an HttpResponse
        passed_on = []
        answered: dict[str, Any] = {}

        def to_django(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            passed_on.append(environ)
            return []

        def start_response(status: str, headers: list[tuple[str, str]]) -> None:
            answered.update(status=int(status.split()[0]), headers=headers)

        body = b"".join(BeaconApplication(to_django)(environ, start_response))
        if passed_on:
            return super().__call__(environ)
        response = HttpResponse(body, status=answered["status"])
        del response["Content-Type"]
        for name, value in answered["headers"]:
            response[name] = value
        # What the test client reads after every request.
        response.wsgi_request = WSGIRequest(environ)  # type: ignore[attr-defined]
        return response


class BeaconClient(Client):
    """A test client whose requests reach the beacon endpoint as gunicorn
    serves them: through perfhub.wsgi's BeaconApplication."""

    def __init__(self, **defaults: Any) -> None:
        super().__init__(**defaults)
        self.handler = _BeaconHandler()


def metric_id(n: int = 1, *, started_ms: int | None = None) -> str:
    return f"v6-{started_ms or int(time.time() * 1000)}-{1_000_000_000_000 + n}"


def beacon(*metrics: dict[str, Any], **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "v": 1,
        "pageview": "3f1c9a0e-8d7b-4c55-9b1e-2a7c0c1d5e44",
        "url": f"{ORIGIN}/products/42?ref=mail&utm_source=x#reviews",
        "release": "2026.11.27-abc123",
        "connection": "4g",
        "sent_at": time.time() * 1000,
        "metrics": list(metrics),
    }
    body.update(fields)
    return body


def lcp(value: float = 2310.5, n: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "name": "LCP",
        "value": value,
        "delta": value,
        "id": metric_id(n),
        "rating": "good",
        "navigationType": "navigate",
        "attribution": {"target": "main > img.hero", "url": "https://cdn.example.com/hero.jpg"},
        **extra,
    }


def post(
    client: Client,
    site: Site,
    body: object,
    *,
    content_type: str = "text/plain",
    origin: str | None = ORIGIN,
    user_agent: str = CHROME_DESKTOP,
    **headers: str,
) -> Any:  # the test client's response, with .json()
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    extra: dict[str, Any] = {"HTTP_USER_AGENT": user_agent, **headers}
    if origin:
        extra["HTTP_ORIGIN"] = origin
    return client.generic(
        "POST", f"/api/v1/vitals/collect?key={site.public_key}", data=data, content_type=content_type, **extra
    )


def drain() -> int:
    """On the production path, run the stream consumer until the stream is
    empty, as the worker does; on the embedded default beacons are already
    in the database."""
    if not settings.REDIS_URL:
        return 0
    consumer = StreamConsumer(store=lambda records: metrics_store(records=records), block_ms=10)
    consumer.ensure_group()
    total = 0
    while written := consumer.poll():
        total += written
    return total
