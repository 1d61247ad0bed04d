"""Pure functions that turn what a beacon carries into what PerfHub stores.

The collect endpoint calls them on every beacon, so they avoid work they can
skip: regexes are compiled at import, and the functions whose inputs repeat
(user agents, paths, site route patterns) sit behind ``functools.lru_cache``.

Privacy lives here too: ``clean_url`` drops query strings, fragments and
userinfo, and ``country_for_ip`` is the only place a client IP is used.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote_plus, urlsplit

import geoip2.database
import geoip2.models
import ua_parser
from django.conf import settings
from django.urls import Resolver404, resolve

logger = logging.getLogger(__name__)

MAX_URL_LENGTH = 2048
MAX_PATH_LENGTH = 512
MAX_ROUTE_LENGTH = 200
# A site's route patterns run against every beacon's path; the cap keeps a
# pasted monster out of the hot loop (and out of the compile cache).
MAX_ROUTE_PATTERN_LENGTH = 500
MAX_USER_AGENT_LENGTH = 512

# --- URLs -------------------------------------------------------------------

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Characters no serialised URL host contains: whitespace, controls, and the
# delimiters that would have ended the host had the URL been well formed.
_BAD_HOST_CHAR = re.compile(r"[\s\x00-\x1f\x7f/\\?#@<>\"'`{}|^]")
# A percent-escape cut in two by truncation ("%2" or "%").
_PARTIAL_ESCAPE_TAIL = re.compile(r"%[0-9A-Fa-f]?\Z")


@dataclass(frozen=True)
class CleanUrl:
    host: str
    """Lower-case ``host[:port]`` of the page; the scheme's default port is dropped."""
    path: str
    """Not percent-decoded; no query, no fragment; ``""`` becomes ``"/"``; at most 512 characters."""
    url: str
    """``scheme://host/path`` plus only the kept query parameters, in their original order."""


def clean_url(raw: str, *, keep_params: Sequence[str] = ()) -> CleanUrl:
    """Strip query strings and fragments (privacy: they can carry emails and
    tokens), except the query parameters named in ``keep_params``.

    1. The URL must be absolute http(s) with a host and at most 2048
       characters; anything else raises ``ValueError`` with a message fit to
       show to the site owner.
    2. Userinfo (``user:password@``) is dropped silently.
    3. The host is lower-cased and the scheme's default port dropped, so
       ``https://Shop.example.com:443/`` and ``https://shop.example.com/``
       are one page.
    4. A path longer than 512 characters is truncated, never rejected (a
       trailing percent-escape cut in two is dropped whole).
    5. Kept parameters keep their original spelling and order, repeats
       included; names are compared after percent-decoding.
    """
    raw = raw.strip()
    if len(raw) > MAX_URL_LENGTH:
        raise ValueError(f"URL is {len(raw)} characters long; the limit is {MAX_URL_LENGTH}.")
    if not raw:
        raise ValueError("URL is empty.")
    parts = urlsplit(raw)
    scheme = parts.scheme
    if scheme not in _DEFAULT_PORTS:
        if not scheme:
            raise ValueError("URL must be absolute, starting with http:// or https://.")
        raise ValueError(f"URL scheme must be http or https, not {scheme!r}.")
    host = _host(parts)
    path = parts.path or "/"
    if len(path) > MAX_PATH_LENGTH:
        path = _PARTIAL_ESCAPE_TAIL.sub("", path[:MAX_PATH_LENGTH])
    url = f"{scheme}://{host}{path}"
    if keep_params and parts.query:
        query = _kept_query(parts.query, frozenset(keep_params))
        if query:
            url = f"{url}?{query}"
    return CleanUrl(host=host, path=path, url=url)


def _host(parts: SplitResult) -> str:
    # hostname is lower-cased and free of userinfo and port.
    hostname = parts.hostname
    if not hostname:
        raise ValueError(f"URL has no host: nothing between {parts.scheme}:// and the path.")
    if _BAD_HOST_CHAR.search(hostname):
        raise ValueError(f"URL host {hostname!r} contains characters a host cannot have.")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"URL port {parts.netloc.rpartition(':')[2]!r} is not a number from 0 to 65535.") from None
    if ":" in hostname:  # IPv6 literal: urlsplit removed the brackets.
        hostname = f"[{hostname}]"
    if port is None or port == _DEFAULT_PORTS[parts.scheme]:
        return hostname
    return f"{hostname}:{port}"


def _kept_query(query: str, keep: frozenset[str]) -> str:
    kept = []
    for pair in query.split("&"):
        name = pair.partition("=")[0]
        if name and unquote_plus(name) in keep:
            kept.append(pair)
    return "&".join(kept)


# --- Routes -------------------------------------------------------------------

ID = ":id"

_DIGIT = re.compile(r"\d")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEX = re.compile(r"[0-9a-fA-F]{16,}")
# Digits joined by separators: dates (2024-11-27, 27.11.2024), times, version
# and coordinate pairs (1.2.3, 48.85,2.35).
_DIGIT_GROUPS = re.compile(r"\d+(?:[-_.,:+~]\d+)+")
# base64 and base64url alphabets, optional padding.
_TOKEN = re.compile(r"[A-Za-z0-9_+-]{20,}={0,2}")
_UPPER = re.compile(r"[A-Z]")
_LOWER = re.compile(r"[a-z]")
# One word of a human-made slug or title: "Release", "notes", "API", "2024".
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+|\d+")
_WORD_SEPARATORS = re.compile(r"[-_]")
# "blue-widget-12345", "order_12345", "my-post-4f3a9c2e81b0": a slug whose
# last word is a number of 4+ digits or a hex id of 8+ characters with a digit.
_SLUG_THEN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*?[-_](?:\d{4,}|(?=[a-f]*\d)[0-9a-f]{8,})")
# "12345-blue-widget": the same with the id first.
_ID_THEN_SLUG = re.compile(r"\d{4,}[-_][A-Za-z0-9_-]+")
# "12345.html", "2024-11-27.json": an id followed by a file extension.
_EXTENSION = re.compile(r"(.+?)(\.[A-Za-z][A-Za-z0-9]{0,7})")


def _is_id(segment: str) -> bool:
    """Whether one path segment is an identifier rather than a word.

    A segment without a digit is always a word: UUIDs, hashes and random
    tokens all but always contain one, and this keeps ``products``,
    ``checkout`` and ``about-us`` off every regex below.
    """
    if not _DIGIT.search(segment):
        return False
    if (
        segment.isdigit()
        or _UUID.fullmatch(segment)
        or _HEX.fullmatch(segment)
        or _DIGIT_GROUPS.fullmatch(segment)
        or _SLUG_THEN_ID.fullmatch(segment)
        or _ID_THEN_SLUG.fullmatch(segment)
    ):
        return True
    if _TOKEN.fullmatch(segment) and _UPPER.search(segment) and _LOWER.search(segment):
        # "Django_5_Release_Notes_Explained" has the same alphabet as a token, but
        # every piece of it is a word or a number; a random token's pieces
        # switch case mid-piece ("aZ3kQ").
        pieces = _WORD_SEPARATORS.split(segment.rstrip("="))
        return not (len(pieces) > 1 and all(_WORD.fullmatch(piece) for piece in pieces if piece))
    return False


def _collapse_segment(segment: str) -> str:
    if _is_id(segment):
        return ID
    with_extension = _EXTENSION.fullmatch(segment)
    if with_extension and _is_id(with_extension[1]):
        return ID + with_extension[2]
    return segment


@functools.lru_cache(maxsize=4096)
def collapse_ids(path: str) -> str:
    """The automatic route: id-like path segments become ``:id``.

    Ids are: all-digit segments (``42``), UUIDs in any case, hex strings of
    16+ characters (hashes), base64/base64url-like tokens of 20+ characters
    with a digit and both cases, digits joined by separators (dates such as
    ``2024-11-27``, versions such as ``1.2.3``), and slugs that end or start
    with a number of 4+ digits or end with a hex id (``blue-widget-12345``,
    ``order-12345``, ``12345-blue-widget``, ``my-post-4f3a9c2e81b0``).

    Such a slug becomes ``:id`` whole, slug included: the slug is the item's
    title in the SEO pattern ``<title>-<id>``, so keeping it would make one
    route per item, which is what collapsing exists to prevent. Short numbers
    stay (``top-10``, ``iphone-15``, ``v2``). An id with a file extension
    keeps the extension (``12345.html`` becomes ``:id.html``).

    Ordinary words stay, and so do empty segments: a leading or trailing
    slash and ``//`` survive as they were.
    """
    return "/".join(_collapse_segment(segment) for segment in path.split("/"))


_UNSANE_ROUTE = re.compile(r"[\s\x00-\x1f\x7f-\x9f?#]")


def validate_route(route: str) -> None:
    """Raise ``ValueError`` unless ``route`` can name a page's route: it starts
    with ``/``, has at most 200 characters and no whitespace, control
    character, ``?`` or ``#`` (a query or fragment in a route would smuggle
    back what ``clean_url`` strips)."""
    if not route.startswith("/"):
        raise ValueError("A route must start with '/'.")
    if len(route) > MAX_ROUTE_LENGTH:
        raise ValueError(f"A route can have at most {MAX_ROUTE_LENGTH} characters; this one has {len(route)}.")
    bad = _UNSANE_ROUTE.search(route)
    if bad:
        raise ValueError(f"A route cannot contain {bad[0]!r} (position {bad.start()}).")


def validate_route_pattern(pattern: str) -> None:
    """Raise ``ValueError`` with a message for the Site form unless
    ``pattern`` is a route rule ``route_for`` can use: a Python regular
    expression of at most 500 characters that compiles and does not match the
    empty string (such a pattern matches every path, or none, and would hide
    the rules after it)."""
    if not pattern:
        raise ValueError("Enter a regular expression, e.g. ^/products/\\d+$.")
    if len(pattern) > MAX_ROUTE_PATTERN_LENGTH:
        raise ValueError(
            f"A route pattern can have at most {MAX_ROUTE_PATTERN_LENGTH} characters; this one has {len(pattern)}."
        )
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        raise ValueError(f"Not a valid regular expression: {exc.msg}{where}.") from None
    if compiled.search(""):
        raise ValueError(
            "This pattern matches an empty string, so it would match every page; "
            "make it more specific, e.g. ^/products/\\d+$."
        )


@functools.lru_cache(maxsize=1024)
def _compiled_rule(pattern: str) -> re.Pattern[str] | None:
    try:
        validate_route_pattern(pattern)
    except ValueError:
        # Saved before validation existed, or edited around the form: skip
        # the rule rather than fail the beacon.
        return None
    return re.compile(pattern)


# "(?P<name>" opens a named group in the regex routes of re_path().
_NAMED_GROUP = re.compile(r"\(\?P<(\w+)>")
# "<int:token_id>" or "<slug>" in the routes of path().
_CONVERTER = re.compile(r"<(?:\w+:)?(\w+)>")
_ESCAPED = re.compile(r"\\(.)")


@functools.lru_cache(maxsize=256)
def _readable_django_route(route: str) -> str:
    """``tokens/<int:token_id>/revoke/`` -> ``/tokens/:token_id/revoke/``;
    ``admin/(?P<app_label>auth|core)/$`` -> ``/admin/:app_label/``."""
    out = []
    i = 0
    while match := _NAMED_GROUP.search(route, i):
        out.append(route[i : match.start()])
        out.append(f":{match[1]}")
        i = _group_end(route, match.end())
    out.append(route[i:])
    # Converters after groups: "(?P<app_label>" would look like one.
    readable = _CONVERTER.sub(r":\1", "".join(out))
    # Anchors and escapes of re_path() routes, which Django joins as they are.
    readable = _ESCAPED.sub(r"\1", readable.replace("^", "").replace("$", ""))
    return "/" + readable


def _group_end(regex: str, start: int) -> int:
    """Index just past the ``)`` closing the group whose body starts at ``start``."""
    depth = 1
    in_class = False  # inside [...], where parentheses are literal
    i = start
    while i < len(regex):
        char = regex[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return len(regex)


def route_for(
    *,
    declared: str | None,
    path: str,
    rules: Sequence[tuple[str, str]] = (),
    resolve_django: bool = False,
) -> str:
    """The route a page view counts under, from the first of these that gives one:

    1. ``declared``, the route the page sent, when ``validate_route`` accepts it;
    2. ``rules``, the site's ordered ``(pattern, route)`` pairs, matched with
       ``re.search`` against ``path``; the first match wins, and a pattern
       ``validate_route_pattern`` rejects is skipped;
    3. when ``resolve_django`` is set (PerfHub's own pages), Django's URL
       resolver, its route shown as ``/tokens/:token_id/revoke/``;
    4. ``collapse_ids(path)``.
    """
    if declared and _is_sane_route(declared):
        return declared
    for pattern, route in rules:
        compiled = _compiled_rule(pattern)
        if compiled is not None and compiled.search(path):
            return route
    if resolve_django:
        django_route = _django_route(path)
        if django_route is not None:
            return django_route
    return collapse_ids(path)


def _is_sane_route(route: str) -> bool:
    try:
        validate_route(route)
    except ValueError:
        return False
    return True


def _django_route(path: str) -> str | None:
    try:
        match = resolve(path)
    except Resolver404:
        return None
    return _readable_django_route(match.route)


# --- User agents --------------------------------------------------------------

DESKTOP = "desktop"
MOBILE = "mobile"
TABLET = "tablet"

# Case-insensitive; "cubot" is a phone brand, not a robot.
_BOT = re.compile(
    r"(?<!cu)bot|crawl|spider|slurp|headless|lighthouse|pagespeed|pingdom|gtmetrix|facebookexternalhit"
    r"|bingpreview|python-requests|curl|wget|go-http-client|httpclient",
    re.IGNORECASE,
)
_TABLET = re.compile(r"iPad|Tablet")
_MOBILE = re.compile(r"Mobi|iPhone|iPod")


@dataclass(frozen=True)
class ClientInfo:
    device_class: str
    """``"mobile"``, ``"tablet"`` or ``"desktop"``."""
    browser: str
    """Browser family as ua-parser names it ("Chrome", "Mobile Safari", ...); "Other" when unknown."""
    browser_major: str
    """Major version, e.g. "131"; "" when unknown."""
    os: str
    """OS family as ua-parser names it ("Windows", "Mac OS X", "iOS", ...); "Other" when unknown."""
    is_bot: bool


def device_class_for(ua: str) -> str:
    """Device class by the heuristic MDN recommends over parsing models:

    1. ``iPad`` or ``Tablet`` (Firefox for Android tablets) -> tablet;
    2. ``Mobi`` (which covers ``Mobile``), ``iPhone`` or ``iPod`` -> mobile;
    3. ``Android`` without ``Mobi``: Android tablets drop it -> tablet;
    4. anything else -> desktop.

    iPadOS Safari sends a Mac user agent by default, so those iPads count
    as desktop: the user agent cannot tell them apart.
    """
    if _TABLET.search(ua):
        return TABLET
    if _MOBILE.search(ua):
        return MOBILE
    if "Android" in ua:
        return TABLET
    return DESKTOP


def parse_user_agent(ua: str) -> ClientInfo:
    """Browser, OS, device class and bot flag for a User-Agent header.

    Browser and OS come from ua-parser; the device class from
    ``device_class_for``. A bot is an empty user agent, one ua-parser calls a
    ``Spider`` device, or one that names a crawler or a scripted client
    (``_BOT``). User agents longer than 512 characters are truncated first:
    real browsers send about 150, and the parser's cost grows with length.
    """
    return _parse_user_agent(ua[:MAX_USER_AGENT_LENGTH])


@functools.lru_cache(maxsize=4096)
def _parse_user_agent(ua: str) -> ClientInfo:
    if not ua.strip():
        return ClientInfo(device_class=DESKTOP, browser="Other", browser_major="", os="Other", is_bot=True)
    result = ua_parser.parse(ua)
    browser = result.user_agent
    device = result.device
    return ClientInfo(
        device_class=device_class_for(ua),
        browser=browser.family if browser else "Other",
        browser_major=(browser.major or "") if browser else "",
        os=result.os.family if result.os else "Other",
        is_bot=(device is not None and device.family == "Spider") or bool(_BOT.search(ua)),
    )


# --- Countries ----------------------------------------------------------------

# Which geoip2 reader method fits which database type (its metadata names it,
# e.g. "GeoLite2-City"); the wrong one raises TypeError.
_GEOIP_METHODS = (("Enterprise", "enterprise"), ("City", "city"), ("Country", "country"))


def country_for_ip(ip: str) -> str:
    """ISO 3166 alpha-2 country of a client IP from the MaxMind database at
    ``settings.GEOIP_PATH`` (GeoIP2/GeoLite2 Country, City or Enterprise).

    Returns ``""`` when no database is configured or it cannot be opened, for
    private, loopback and other non-global addresses, for addresses the
    database does not know, and on any lookup error: the beacon endpoint must
    never fail because of geography. The IP is not kept anywhere.
    """
    path = str(getattr(settings, "GEOIP_PATH", "") or "")
    if not path:
        return ""
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return ""
    if not address.is_global:
        return ""
    lookup = _geoip_lookup(path)
    if lookup is None:
        return ""
    try:
        return lookup(str(address)).country.iso_code or ""
    except Exception:
        # AddressNotFoundError is the usual case; whatever else a corrupt or
        # truncated database raises must not fail the beacon either.
        return ""


@functools.lru_cache(maxsize=2)
def _geoip_lookup(path: str) -> Callable[[str], geoip2.models.Country] | None:
    """The lookup method of a reader opened once per database path and
    process (memory-mapped; safe to share between threads).

    A database that cannot be opened, or of a type without countries, is
    logged once and not retried until the process restarts: a missing file
    costs one warning, not one per beacon.
    """
    try:
        reader = geoip2.database.Reader(path)
    except Exception as exc:
        logger.warning("GeoIP database %s could not be opened (%s); countries will be empty.", path, exc)
        return None
    database_type = reader.metadata().database_type
    method = next((name for kind, name in _GEOIP_METHODS if kind in database_type), None)
    if method is None:
        logger.warning("GeoIP database %s is a %s database, which has no countries.", path, database_type)
        reader.close()
        return None
    lookup: Callable[[str], geoip2.models.Country] = getattr(reader, method)
    return lookup
