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
5. A poller's usual request is a conditional one whose ETag is still
   current. Each process remembers the ETag of every 200 body it served
   from or into the shared cache, with that entry's expiry, and answers a
   matching ``If-None-Match`` with its 304 (``hit``) without asking Redis:
   the round trip, more than the lookup, is what costs on a busy host. It
   is never staler than the shared entry, since it ends when that entry
   does, and within that time the client could have kept its copy without
   asking at all (``max-age``). It comes after authentication and
   permissions like everything here, and under the same key.
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
# Point 5: key -> (ETag, expiry as a time.time()). Keys are paths and query
# strings of authenticated callers, so the memory is capped all the same.
_current_etags: dict[str, tuple[str, float]] = {}
MAX_REMEMBERED_ETAGS = 1000

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


def _remember_etag(key: str, etag: str, expires_at: float) -> None:
    if len(_current_etags) >= MAX_REMEMBERED_ETAGS:
        now = time.time()
        for stale in [k for k, (_, expiry) in _current_etags.items() if expiry <= now]:
            del _current_etags[stale]
        if len(_current_etags) >= MAX_REMEMBERED_ETAGS:
            _current_etags.clear()
    _current_etags[key] = (etag, expires_at)


def _not_modified_from_memory(request: Request, key: str, seconds: int) -> HttpResponseBase | None:
    """The 304 for a request whose If-None-Match names the current ETag of
    this key as this process last saw it (point 5); None otherwise."""
    etag, expires_at = _current_etags.get(key, ("", 0.0))
    if expires_at <= time.time():
        return None
    # Django's conditional-request logic decides, as in _finish; the stand-in
    # carries the headers it copies onto a 304.
    stand_in = HttpResponse(status=200)
    stand_in["ETag"] = etag
    stand_in["Cache-Control"] = f"private, max-age={seconds}"
    conditional = get_conditional_response(request, etag=etag, response=stand_in)
    return conditional if conditional is not None and conditional.status_code == 304 else None


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
        if "HTTP_IF_NONE_MATCH" in request.META:
            not_modified = _not_modified_from_memory(request, key, seconds)
            if not_modified is not None:
                response_cache_requests.labels(view=name, result="hit").inc()
                not_modified[CACHE_HEADER] = "hit"
                return not_modified
        try:
            entry = cache.get(key)
        except Exception:
            logger.warning("stats response cache unavailable; serving uncached", exc_info=True)
            response = _rendered(view, request, handler(view, request, *args, **kwargs), args, kwargs)
            return _finish(request, response, state="error", seconds=0, view=name)

        if entry is not None:
            cached = HttpResponse(entry["body"], status=entry["status"], content_type=entry["content_type"])
            cached["Age"] = str(max(0, int(time.time() - entry["stored_at"])))
            answer = _finish(request, cached, state="hit", seconds=seconds, view=name)
            if entry["status"] == 200:
                _remember_etag(key, cached["ETag"], entry["stored_at"] + seconds)
            return answer

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
        answer = _finish(request, response, state="miss", seconds=seconds, view=name)
        if response.status_code == 200:
            _remember_etag(key, response["ETag"], time.time() + seconds)
        return answer

    return wrapper
