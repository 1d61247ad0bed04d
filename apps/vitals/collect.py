"""``POST /api/v1/vitals/collect``: the beacon endpoint (DESIGN.md, "The
beacon contract").

A plain Django view rather than DRF: it is the hottest path in PerfHub, takes
no session or user, and answers cross-origin browsers that cannot follow a
login redirect, so none of DRF's machinery would earn its cost here.
"""

import logging
import time
from typing import Any

import orjson
from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from prometheus_client import Counter

from apps.core.ratelimit import Limit, Verdict
from apps.vitals.beacon import MAX_BODY_BYTES, BeaconError, ParsedBeacon, decode_body, parse_beacon
from apps.vitals.models import RouteRule, Site
from apps.vitals.normalize import country_for_ip, parse_user_agent
from apps.vitals.selectors import site_cache_key
from apps.vitals.services import RateLimited, beacon_count, beacon_ingest

logger = logging.getLogger(__name__)

BEACONS = Counter("perfhub_vitals_beacons", "Beacons received, by outcome.", ["outcome"])
METRICS = Counter("perfhub_vitals_metrics", "Metrics received, by outcome.", ["outcome"])

ACCEPTED_CONTENT_TYPES = ("text/plain", "application/json")
# A site's settings are read at most this often per process: key rotation
# and origin changes take effect within this many seconds.
SITE_CACHE_SECONDS = 30
SITE_SHARED_CACHE_SECONDS = 86_400
_sites: dict[str, tuple[float, Site | None, list[tuple[str, str]]]] = {}


def _site_for_key(key: str) -> tuple[Site | None, list[tuple[str, str]]]:
    """The site with this public key and its route rules. Read from the
    database at most every SITE_CACHE_SECONDS per process, and kept in the
    shared cache too: while PostgreSQL is down, beacons for known sites are
    still accepted into the stream (DESIGN.md, "Degradation")."""
    now = time.monotonic()
    cached = _sites.get(key)
    if cached and cached[0] > now:
        return cached[1], cached[2]
    shared_key = site_cache_key(key)
    try:
        site = Site.objects.filter(public_key=key).first()
        rules = list(RouteRule.objects.filter(site=site).values_list("pattern", "route")) if site else []
    except DatabaseError:
        remembered = cache.get(shared_key)
        if remembered is None:
            raise
        site, rules = remembered
    else:
        try:
            cache.set(shared_key, (site, rules), timeout=SITE_SHARED_CACHE_SECONDS)
        except Exception:
            logger.warning("site cache unavailable", exc_info=True)
    if len(_sites) > 10_000:
        _sites.clear()  # unknown keys must not grow the cache without bound
    _sites[key] = (now + SITE_CACHE_SECONDS, site, rules)
    return site, rules


def forget_cached_sites() -> None:
    _sites.clear()


def _client_ip(request: HttpRequest) -> str:
    proxies = settings.PROXY_COUNT
    if proxies:
        # Each trusted proxy appends the address it saw; the client is the
        # one the outermost trusted proxy saw.
        forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",") if part.strip()]
        if len(forwarded) >= proxies:
            return forwarded[-proxies]
    return str(request.META.get("REMOTE_ADDR", ""))


def _origin_allowed(site: Site, origin: str, request: HttpRequest) -> bool:
    if not origin:
        # Not a browser's cross-origin request (a script, or an old browser).
        return True
    if site.is_builtin:
        return origin == f"{request.scheme}://{request.get_host()}"
    return "*" in site.allowed_origins or origin in site.allowed_origins


def _answer(body: dict[str, Any], status: int, origin: str, *, cors: bool) -> HttpResponse:
    # orjson rather than JsonResponse and the json module: 5 rather than 12
    # microseconds for these small answers (timeit), on the hottest path.
    response = HttpResponse(orjson.dumps(body), status=status, content_type="application/json")
    if cors and origin:
        response["Access-Control-Allow-Origin"] = origin
    response["Vary"] = "Origin"
    response["Cache-Control"] = "no-store"
    return response


def _error(
    message: str, status: int, origin: str, *, field: str | None = None, cors: bool = True, **extra: Any
) -> HttpResponse:
    BEACONS.labels(outcome=f"http_{status}").inc()
    return _answer({"error": message, "field": field, **extra}, status, origin, cors=cors)


@csrf_exempt
def collect(request: HttpRequest) -> HttpResponse:
    origin = request.headers.get("Origin", "")
    key = request.GET.get("key") or request.headers.get("X-PerfHub-Key", "")
    if request.method == "OPTIONS":
        return _preflight(request, key, origin)
    if request.method != "POST":
        response = _error("use POST", 405, origin)
        response["Allow"] = "POST, OPTIONS"
        return response
    if not key:
        return _error("the site key is missing: ?key=… or the X-PerfHub-Key header", 400, origin, field="key")
    try:
        site, rules = _site_for_key(key[:64])
    except DatabaseError:
        logger.exception("site lookup failed")
        response = _error("PerfHub cannot check site keys right now; retry later", 503, origin)
        response["Retry-After"] = "30"
        return response
    if site is None:
        return _error("unknown site key", 403, origin, field="key", cors=False)
    if not _origin_allowed(site, origin, request):
        return _error(f"origin {origin[:100]} is not allowed for this site", 403, origin, field="origin", cors=False)
    declared_length = request.META.get("CONTENT_LENGTH") or ""
    if declared_length.isdigit() and int(declared_length) > MAX_BODY_BYTES:
        # Refused before reading: an oversized body never reaches memory.
        return _error(f"the body is larger than {MAX_BODY_BYTES} bytes", 413, origin)
    client_ip = _client_ip(request)
    limits = [
        Limit("vitals-ip", client_ip, settings.VITALS_RATE_LIMIT_PER_IP),
        Limit("vitals-site", str(site.pk), settings.VITALS_RATE_LIMIT_PER_SITE),
    ]
    try:
        parsed = _read_beacon(request, site, rules, client_ip)
    except BeaconError as exc:
        refusal: BeaconError | None = exc
        parsed = None
    else:
        refusal = None
    if parsed is None or not parsed.records:
        # Beacons refused or ignored count against the limits too, so that a
        # flood of them gets its 429; a stored one is counted as it is
        # stored, in the same Redis round trip.
        verdict = beacon_count(limits=limits)
        if verdict.refused is not None:
            return _too_many(verdict, origin)
        return _not_stored(parsed, refusal, origin)
    try:
        beacon_ingest(records=parsed.records, limits=limits)
    except RateLimited as exc:
        return _too_many(exc.verdict, origin)
    except Exception:
        logger.exception("beacon could not be stored")
        response = _error("PerfHub cannot store beacons right now; retry later", 503, origin)
        response["Retry-After"] = "30"
        return response
    METRICS.labels(outcome="rejected").inc(parsed.rejected)
    METRICS.labels(outcome="accepted").inc(len(parsed.records))
    BEACONS.labels(outcome="accepted").inc()
    body_out: dict[str, Any] = {"accepted": len(parsed.records), "rejected": parsed.rejected}
    if parsed.errors:
        body_out["errors"] = parsed.errors[:10]
    return _answer(body_out, 202, origin, cors=True)


def _read_beacon(request: HttpRequest, site: Site, rules: list[tuple[str, str]], client_ip: str) -> ParsedBeacon | None:
    """The beacon's records (perhaps none, every metric rejected), or None
    for a bot's. Raises BeaconError when the whole beacon is refused."""
    # Capped read: a chunked body without Content-Length is bounded too.
    body = request.read(MAX_BODY_BYTES + 1)
    if not body.strip():
        raise BeaconError("empty body; expected a JSON object", field="$")
    content_type = request.content_type or ""
    if content_type not in ACCEPTED_CONTENT_TYPES:
        shown = content_type[:50] or "missing"
        raise BeaconError(f"content type {shown}; send text/plain or application/json", status=415)
    data = decode_body(body)
    client = parse_user_agent(request.headers.get("User-Agent", ""))
    if client.is_bot:
        return None
    return parse_beacon(
        data,
        site=site,
        rules=rules,
        client=client,
        country=country_for_ip(client_ip),
        referer=request.headers.get("Referer", ""),
        received_at=timezone.now(),
    )


def _not_stored(parsed: ParsedBeacon | None, refusal: BeaconError | None, origin: str) -> HttpResponse:
    """The answer to a beacon within its limits that stores nothing."""
    if refusal is not None:
        return _error(refusal.message, refusal.status, origin, field=refusal.field)
    if parsed is None:
        BEACONS.labels(outcome="bot").inc()
        return _answer({"accepted": 0, "rejected": 0, "ignored": "bot"}, 202, origin, cors=True)
    METRICS.labels(outcome="rejected").inc(parsed.rejected)
    first = parsed.errors[0]
    return _error(
        first["error"],
        400,
        origin,
        field=first["field"],
        accepted=0,
        rejected=parsed.rejected,
        errors=parsed.errors[:10],
    )


def _too_many(verdict: Verdict, origin: str) -> HttpResponse:
    who = "IP" if verdict.refused is not None and verdict.refused.scope == "vitals-ip" else "site"
    response = _error(f"too many beacons from this {who}; retry later", 429, origin)
    response["Retry-After"] = str(verdict.retry_after)
    return response


def _preflight(request: HttpRequest, key: str, origin: str) -> HttpResponse:
    """CORS preflight for ``application/json`` beacons. With the key in the
    query string the origin is checked against the site now; with the key
    in a header (not sent on preflights) it is checked on the POST."""
    if key:
        try:
            site, _ = _site_for_key(key[:64])
        except DatabaseError:
            site = None  # cannot tell now; the POST is checked again
        else:
            if site is None or not _origin_allowed(site, origin, request):
                return HttpResponse(status=403)
    response = HttpResponse(status=204)
    if origin:
        response["Access-Control-Allow-Origin"] = origin
        response["Access-Control-Allow-Methods"] = "POST, OPTIONS"
        response["Access-Control-Allow-Headers"] = "Content-Type, X-PerfHub-Key"
        response["Access-Control-Max-Age"] = "86400"
    response["Vary"] = "Origin"
    return response
