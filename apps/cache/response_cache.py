"""Short-lived caching of read-only stats API responses, for dashboards that
poll them.

Apply it to the ``get`` handler of a DRF view, one line::

    from apps.cache.response_cache import cache_response

    class HealthView(APIView):
        @cache_response
        def get(self, request: Request) -> Response: ...

What it does:

1. DRF authenticates, checks permissions and negotiates the content type in
   ``APIView.initial``, before any handler runs, so nothing is ever served
   from the cache to a client that would not get it fresh.
2. The rendered JSON body is kept in the shared cache (Redis in production,
   so one computation serves every worker and replica) for
   ``settings.STATS_CACHE_SECONDS`` (``PERFHUB_STATS_CACHE_SECONDS``, default
   5; 0 turns the cache off). The key is the path, the query string with its
   parameters sorted, and the caller's permission class (token scope or
   session, superuser or not), so bodies never cross permission levels. Only
   JSON answers with status 200 or 503 (a health check's "unhealthy" is still
   a stats body) are kept; errors are never cached.
3. Every answer carries a strong ``ETag`` (a hash of the body), ``Cache-Control:
   private, max-age=<seconds>`` (``private, no-cache`` when off) and
   ``X-PerfHub-Cache: hit | miss | off | bypass | error``; a request whose
   ``If-None-Match`` matches gets ``304 Not Modified`` with no body. The
   outcomes are also counted in ``perfhub_api_response_cache_requests_total``.
4. When the cache fails, the body is computed and served uncached
   (``error``), never a 500.
"""

import functools
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.core.cache import cache
from django.http import HttpResponse
from django.http.response import HttpResponseBase
from django.utils.cache import get_conditional_response
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.cache.metrics import response_cache_requests
from apps.core.models import ApiToken

logger = logging.getLogger(__name__)

KEY_PREFIX = "perfhub:cache:response"
CACHE_HEADER = "X-PerfHub-Cache"
CACHEABLE_STATUSES = frozenset({200, 503})

Handler = Callable[..., Response]


def permission_class(request: Request) -> str:
    """The level of access a request has, as far as a stats body could
    depend on it.

    Users of one level share an entry. That is safe only because the bodies
    are the same for all of them by construction: the views wrapped here
    (cache, database and resilience stats) read server-wide state and take
    nothing from the request but the path and the query, both in the key. A
    view whose body depends on who asks (their sites, their tokens) must not
    use ``@cache_response``."""
    token = request.auth if isinstance(request.auth, ApiToken) else None
    if token is not None:
        return f"token-{token.scope}-{'superuser' if token.user.is_superuser else 'staff'}"
    return "session-superuser" if request.user.is_superuser else "session-staff"


def response_cache_key(request: Request) -> str:
    query = urlencode(sorted((name, value) for name, values in request.GET.lists() for value in values))
    identity = "\n".join((request.path, query, permission_class(request)))
    return f"{KEY_PREFIX}:{hashlib.sha256(identity.encode()).hexdigest()[:40]}"


def _etag(body: bytes) -> str:
    return f'"{hashlib.sha256(body).hexdigest()[:32]}"'


def _finish(request: Request, response: HttpResponseBase, *, state: str, seconds: int, view: str) -> HttpResponseBase:
    response_cache_requests.labels(view=view, result=state).inc()
    response[CACHE_HEADER] = state
    response["Cache-Control"] = f"private, max-age={seconds}" if seconds else "private, no-cache"
    if isinstance(response, HttpResponse) and response.status_code in CACHEABLE_STATUSES:
        response["ETag"] = _etag(response.content)
        # Django's own If-None-Match handling (weak comparison, "*", lists),
        # which copies ETag and Cache-Control onto the 304.
        conditional = get_conditional_response(request, etag=response["ETag"], response=response)
        if conditional is not None and conditional is not response:
            conditional[CACHE_HEADER] = state
            return conditional
    return response


def _rendered(view: APIView, request: Request, response: Response, args: Any, kwargs: Any) -> Response:
    finalized = view.finalize_response(request, response, *args, **kwargs)
    # A DRF Response renders lazily, after the view returns; the body is
    # needed now. dispatch() finalizes it again, which changes nothing.
    finalized.render()
    return finalized


def cache_response(handler: Handler) -> Callable[..., HttpResponseBase]:
    @functools.wraps(handler)
    def wrapper(view: APIView, request: Request, *args: Any, **kwargs: Any) -> HttpResponseBase:
        seconds: int = settings.STATS_CACHE_SECONDS
        name = type(view).__name__
        if seconds <= 0 or getattr(request.accepted_renderer, "format", None) != "json":
            state = "off" if seconds <= 0 else "bypass"
            response = _rendered(view, request, handler(view, request, *args, **kwargs), args, kwargs)
            return _finish(request, response, state=state, seconds=0, view=name)

        key = response_cache_key(request)
        try:
            entry = cache.get(key)
        except Exception:
            logger.warning("stats response cache unavailable; serving uncached", exc_info=True)
            response = _rendered(view, request, handler(view, request, *args, **kwargs), args, kwargs)
            return _finish(request, response, state="error", seconds=0, view=name)

        if entry is not None:
            cached = HttpResponse(entry["body"], status=entry["status"], content_type=entry["content_type"])
            cached["Age"] = str(max(0, int(time.time() - entry["stored_at"])))
            return _finish(request, cached, state="hit", seconds=seconds, view=name)

        response = _rendered(view, request, handler(view, request, *args, **kwargs), args, kwargs)
        if response.status_code in CACHEABLE_STATUSES:
            entry = {
                "body": response.content,
                "status": response.status_code,
                "content_type": response["Content-Type"],
                "stored_at": time.time(),
            }
            try:
                cache.set(key, entry, timeout=seconds)
            except Exception:
                logger.warning("stats response not cached: cache unavailable", exc_info=True)
                return _finish(request, response, state="error", seconds=0, view=name)
        return _finish(request, response, state="miss", seconds=seconds, view=name)

    return wrapper
