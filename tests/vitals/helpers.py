import json
import time
from typing import Any

from django.conf import settings
from django.test import Client

from apps.vitals.models import Site
from apps.vitals.services import metrics_store
from apps.vitals.stream import StreamConsumer

CHROME_DESKTOP = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
ORIGIN = "https://shop.example.com"


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
