"""The ops page's one outbound call: an instant query to a Prometheus server.

Kept to a single function so that a circuit breaker (apps.resilience) can be
put around it without touching its callers. urllib rather than a client
library: one GET with a timeout and a JSON answer is all it takes.
"""

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlencode, urlsplit

import pybreaker

from apps.resilience.breakers import breaker


class PrometheusQueryError(Exception):
    """Prometheus did not answer, or answered with an error."""


def prometheus_host(base_url: str) -> str:
    """host:port of the server, for messages: never the URL's credentials or path."""
    parts = urlsplit(base_url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def prometheus_query(base_url: str, promql: str, *, timeout: float) -> list[dict[str, Any]]:
    """Run one PromQL instant query; return its vector (``[{"metric": {...}, "value": [t, "v"]}]``).
    Behind the "prometheus" circuit breaker: while it is open, the ops page
    says so at once instead of waiting out a timeout per panel."""
    try:
        return breaker("prometheus").call(_query, base_url, promql, timeout=timeout)
    except pybreaker.CircuitBreakerError as exc:
        raise PrometheusQueryError(f"not asked: {exc}") from None


def _query(base_url: str, promql: str, *, timeout: float) -> list[dict[str, Any]]:
    url = f"{base_url}/api/v1/query?{urlencode({'query': promql})}"
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 - settings allow http(s) only
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - as above
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        # Prometheus explains a bad query in the JSON body of its 400/422.
        try:
            detail = json.load(exc).get("error") or exc.reason
        except (ValueError, AttributeError):
            detail = exc.reason
        raise PrometheusQueryError(f"HTTP {exc.code}: {detail}") from None
    except urllib.error.URLError as exc:
        raise PrometheusQueryError(str(exc.reason)) from None
    except (TimeoutError, OSError) as exc:
        raise PrometheusQueryError(str(exc) or type(exc).__name__) from None
    except ValueError:
        raise PrometheusQueryError("the answer was not JSON") from None
    if not isinstance(body, dict) or body.get("status") != "success":
        raise PrometheusQueryError(str(body.get("error") if isinstance(body, dict) else "unexpected answer"))
    data = body.get("data") or {}
    if data.get("resultType") != "vector":
        raise PrometheusQueryError(f"expected a vector, got {data.get('resultType')!r}")
    return list(data.get("result") or [])
