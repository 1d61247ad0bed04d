from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

from apps.resilience.health import readiness_checks


class ProbeMiddleware:
    """Answers ``/livez`` and ``/readyz`` before anything else runs.

    Load balancers and Kubernetes call these by pod IP over plain HTTP, so
    they must not go through ALLOWED_HOSTS validation, the HTTPS redirect,
    sessions or the request metrics of real traffic.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path == "/livez":
            return _no_store(JsonResponse({"status": "ok"}))
        if request.path == "/readyz":
            results = readiness_checks()
            ready = all(r.ok for r in results)
            body = {
                "status": "ready" if ready else "unavailable",
                "failing": [r.name for r in results if not r.ok],
                "checks": {r.name: {"ok": r.ok, "latency_ms": r.latency_ms, "message": r.message} for r in results},
            }
            return _no_store(JsonResponse(body, status=200 if ready else 503))
        return self.get_response(request)


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    return response
