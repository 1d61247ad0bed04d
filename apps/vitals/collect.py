"""``POST /api/v1/vitals/collect``: the beacon endpoint (DESIGN.md, "The
beacon contract").

The hottest path in PerfHub: it takes no session or user, and answers
cross-origin browsers that cannot follow a login redirect. So the endpoint
is ``answer_beacon``, a function of the few things it reads of a request
(``BeaconRequest``), with two ways in: ``collect``, a plain Django view
(none of DRF's machinery would earn its cost here), and the WSGI path of
apps.vitals.wsgi, which gunicorn serves beacons through without building a
Django request at all.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
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
# Looked up once: labels() takes a lock and searches on every call.
BEACONS_ACCEPTED = BEACONS.labels(outcome="accepted")
METRICS_ACCEPTED = METRICS.labels(outcome="accepted")
METRICS_REJECTED = METRICS.labels(outcome="rejected")

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


def client_ip(forwarded_for: str, remote_addr: str) -> str:
    """The client's address, from the ``X-Forwarded-For`` header and the
    peer's address."""
    proxies = settings.PROXY_COUNT
    if proxies:
        # Each trusted proxy appends the address it saw; the client is the
        # one the outermost trusted proxy saw.
        forwarded = [part.strip() for part in forwarded_for.split(",") if part.strip()]
        if len(forwarded) >= proxies:
            return forwarded[-proxies]
    return remote_addr


# Not frozen: a frozen dataclass sets each field through object.__setattr__,
# which made building this one, once a beacon, five times slower (timeit:
# 2.9 against 0.6 microseconds). Nothing changes it once built.
@dataclass(slots=True)
class BeaconRequest:
    """What the endpoint reads of a request."""

    method: str
    key: str  # the site's public key, from ?key= or X-PerfHub-Key
    origin: str
    own_origin: str  # PerfHub's own scheme://host, the built-in site's only origin
    content_length: str  # as declared, perhaps empty
    content_type: str  # without parameters
    user_agent: str
    referer: str
    client_ip: str
    read: Callable[[int], bytes]


@dataclass(slots=True)
class Answer:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@csrf_exempt
def collect(request: HttpRequest) -> HttpResponse:
    answer = answer_beacon(
        BeaconRequest(
            method=request.method or "",
            key=request.GET.get("key") or request.headers.get("X-PerfHub-Key", ""),
            origin=request.headers.get("Origin", ""),
            own_origin=f"{request.scheme}://{request.get_host()}",
            content_length=request.META.get("CONTENT_LENGTH") or "",
            content_type=request.content_type or "",
            user_agent=request.headers.get("User-Agent", ""),
            referer=request.headers.get("Referer", ""),
            client_ip=client_ip(request.headers.get("X-Forwarded-For", ""), str(request.META.get("REMOTE_ADDR", ""))),
            read=request.read,
        )
    )
    response = HttpResponse(answer.body, status=answer.status, content_type=answer.content_type)
    for name, value in answer.headers.items():
        response[name] = value
    return response


def _origin_allowed(site: Site, beacon: BeaconRequest) -> bool:
    origin = beacon.origin
    if not origin:
        # Not a browser's cross-origin request (a script, or an old browser).
        return True
    if site.is_builtin:
        return origin == beacon.own_origin
    return "*" in site.allowed_origins or origin in site.allowed_origins


def _answer(body: dict[str, Any], status: int, origin: str, *, cors: bool) -> Answer:
    # orjson rather than the json module: 5 rather than 12 microseconds for
    # these small answers (timeit), on the hottest path.
    headers = {"Vary": "Origin", "Cache-Control": "no-store"}
    if cors and origin:
        headers["Access-Control-Allow-Origin"] = origin
    return Answer(status, orjson.dumps(body), "application/json", headers)


def _error(
    message: str, status: int, origin: str, *, field: str | None = None, cors: bool = True, **extra: Any
) -> Answer:
    BEACONS.labels(outcome=f"http_{status}").inc()
    return _answer({"error": message, "field": field, **extra}, status, origin, cors=cors)


def answer_beacon(beacon: BeaconRequest) -> Answer:
    """The endpoint's answer to a request, having stored what it accepts."""
    origin = beacon.origin
    key = beacon.key
    if beacon.method == "OPTIONS":
        return _preflight(beacon)
    if beacon.method != "POST":
        answer = _error("use POST", 405, origin)
        answer.headers["Allow"] = "POST, OPTIONS"
        return answer
    if not key:
        return _error("the site key is missing: ?key=… or the X-PerfHub-Key header", 400, origin, field="key")
    try:
        site, rules = _site_for_key(key[:64])
    except DatabaseError:
        logger.exception("site lookup failed")
        answer = _error("PerfHub cannot check site keys right now; retry later", 503, origin)
        answer.headers["Retry-After"] = "30"
        return answer
    if site is None:
        return _error("unknown site key", 403, origin, field="key", cors=False)
    if not _origin_allowed(site, beacon):
        return _error(f"origin {origin[:100]} is not allowed for this site", 403, origin, field="origin", cors=False)
    declared_length = beacon.content_length
    if declared_length.isdigit() and int(declared_length) > MAX_BODY_BYTES:
        # Refused before reading: an oversized body never reaches memory.
        return _error(f"the body is larger than {MAX_BODY_BYTES} bytes", 413, origin)
    limits = [
        Limit("vitals-ip", beacon.client_ip, settings.VITALS_RATE_LIMIT_PER_IP),
        Limit("vitals-site", str(site.pk), settings.VITALS_RATE_LIMIT_PER_SITE),
    ]
    try:
        parsed = _read_beacon(beacon, site, rules)
    except BeaconError as exc:
        refusal: BeaconError | None = exc
        parsed = None
    else:
        refusal = None
    if parsed is None or not parsed.accepted:
        # Beacons refused or ignored count against the limits too, so that a
        # flood of them gets its 429; a stored one is counted as it is
        # stored, in the same Redis round trip.
        verdict = beacon_count(limits=limits)
        if verdict.refused is not None:
            return _too_many(verdict, origin)
        return _not_stored(parsed, refusal, origin)
    try:
        beacon_ingest(beacon=parsed, limits=limits)
    except RateLimited as exc:
        return _too_many(exc.verdict, origin)
    except Exception:
        logger.exception("beacon could not be stored")
        answer = _error("PerfHub cannot store beacons right now; retry later", 503, origin)
        answer.headers["Retry-After"] = "30"
        return answer
    if parsed.rejected:
        METRICS_REJECTED.inc(parsed.rejected)
    METRICS_ACCEPTED.inc(parsed.accepted)
    BEACONS_ACCEPTED.inc()
    body_out: dict[str, Any] = {"accepted": parsed.accepted, "rejected": parsed.rejected}
    if parsed.errors:
        body_out["errors"] = parsed.errors[:10]
    return _answer(body_out, 202, origin, cors=True)


def _read_beacon(beacon: BeaconRequest, site: Site, rules: list[tuple[str, str]]) -> ParsedBeacon | None:
    """The beacon's records (perhaps none, every metric rejected), or None
    for a bot's. Raises BeaconError when the whole beacon is refused."""
    # Capped read: a chunked body without Content-Length is bounded too.
    body = beacon.read(MAX_BODY_BYTES + 1)
    if not body.strip():
        raise BeaconError("empty body; expected a JSON object", field="$")
    content_type = beacon.content_type
    if content_type not in ACCEPTED_CONTENT_TYPES:
        shown = content_type[:50] or "missing"
        raise BeaconError(f"content type {shown}; send text/plain or application/json", status=415)
    data = decode_body(body)
    client = parse_user_agent(beacon.user_agent)
    if client.is_bot:
        return None
    return parse_beacon(
        data,
        site=site,
        rules=rules,
        client=client,
        country=country_for_ip(beacon.client_ip),
        referer=beacon.referer,
        # timezone.now() as it is with USE_TZ on (perfhub.settings), without
        # its settings lookup on the hottest path.
        received_at=datetime.now(UTC),
    )


def _not_stored(parsed: ParsedBeacon | None, refusal: BeaconError | None, origin: str) -> Answer:
    """The answer to a beacon within its limits that stores nothing."""
    if refusal is not None:
        return _error(refusal.message, refusal.status, origin, field=refusal.field)
    if parsed is None:
        BEACONS.labels(outcome="bot").inc()
        return _answer({"accepted": 0, "rejected": 0, "ignored": "bot"}, 202, origin, cors=True)
    METRICS_REJECTED.inc(parsed.rejected)
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


def _too_many(verdict: Verdict, origin: str) -> Answer:
    who = "IP" if verdict.refused is not None and verdict.refused.scope == "vitals-ip" else "site"
    answer = _error(f"too many beacons from this {who}; retry later", 429, origin)
    answer.headers["Retry-After"] = str(verdict.retry_after)
    return answer


def _preflight(beacon: BeaconRequest) -> Answer:
    """CORS preflight for ``application/json`` beacons. With the key in the
    query string the origin is checked against the site now; with the key
    in a header (not sent on preflights) it is checked on the POST."""
    origin = beacon.origin
    if beacon.key:
        try:
            site, _ = _site_for_key(beacon.key[:64])
        except DatabaseError:
            site = None  # cannot tell now; the POST is checked again
        else:
            if site is None or not _origin_allowed(site, beacon):
                return Answer(403)
    headers = {"Vary": "Origin"}
    if origin:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
        headers["Access-Control-Allow-Headers"] = "Content-Type, X-PerfHub-Key"
        headers["Access-Control-Max-Age"] = "86400"
    return Answer(204, headers=headers)
