"""Parsing and validation of beacons (DESIGN.md, "The beacon contract").

A beacon is turned into metric records, plain dicts with the columns of
``Metric``, or refused with a ``BeaconError`` naming the field. A metric that
is invalid on its own is rejected and counted while the rest of its beacon is
kept.
"""

import itertools
import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeGuard

import orjson

from apps.vitals.models import Rating, Site
from apps.vitals.normalize import ClientInfo, clean_url, route_for

# web-vitals' own thresholds: good <= first, poor > second.
THRESHOLDS: dict[str, tuple[float, float]] = {
    "LCP": (2500, 4000),
    "INP": (200, 500),
    "CLS": (0.1, 0.25),
    "FCP": (1800, 3000),
    "TTFB": (800, 1800),
}
METRIC_NAMES = frozenset(THRESHOLDS)
# Times in milliseconds up to two minutes; CLS is unitless.
VALUE_CAPS = {name: (100.0 if name == "CLS" else 120_000.0) for name in THRESHOLDS}
MAX_BODY_BYTES = 64 * 1024
MAX_METRICS_PER_BEACON = 50
MAX_ATTRIBUTION_BYTES = 4096
MAX_ATTRIBUTION_STRING = 500
# A record's flag, not one of Metric's columns: False when the beacon says
# this is the metric's first report (web-vitals' delta, the change since its
# last report, equals its value), so that no row of it can be stored yet
# short of a stream entry delivered twice; services.metrics_write writes
# those rows the cheaper way. A record without it counts as reported before.
REPORTED_BEFORE = "reported_before"
CONNECTIONS = frozenset({"slow-2g", "2g", "3g", "4g"})
NAVIGATION_TYPES = frozenset(
    {"navigate", "reload", "back-forward", "back-forward-cache", "prerender", "restore", "soft-navigation"}
)
_METRIC_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# web-vitals ids are "v<major>-<Date.now() at page load>-<random>".
_ID_TIMESTAMP = re.compile(r"^v\d+-(\d{13})-")
_DAY_MS = 86_400_000
_PAGEVIEW = re.compile(r"^[A-Za-z0-9-]{1,64}$")


class BeaconError(Exception):
    """The whole beacon is refused: ``status`` is the HTTP answer."""

    def __init__(self, message: str, *, field: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status


@dataclass
class ParsedBeacon:
    """A beacon's accepted metrics, as the fields their records share (the
    page, the client, the arrival) and each record's own, and its rejected
    metrics' errors. Kept apart, the shared fields are built and encoded
    for the stream once per beacon, not once per metric."""

    shared: dict[str, Any] = field(default_factory=dict)
    own: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)

    @property
    def records(self) -> list[dict[str, Any]]:
        """Each accepted metric's whole record."""
        return [{**self.shared, **fields} for fields in self.own]

    @property
    def accepted(self) -> int:
        return len(self.own)

    @property
    def rejected(self) -> int:
        return len(self.errors)


def rating_for(name: str, value: float) -> int:
    good, poor = THRESHOLDS[name]
    if value <= good:
        return Rating.GOOD
    if value <= poor:
        return Rating.NEEDS_IMPROVEMENT
    return Rating.POOR


def decode_body(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY_BYTES:
        raise BeaconError(f"body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}", status=413)
    if not body.strip():
        raise BeaconError("empty body; expected a JSON object", field="$")
    try:
        # orjson parses a beacon in a third of the json module's time. What
        # it refuses goes to the json module, for its error message, or to
        # parse what orjson does not: NaN, Infinity and 1e400 (parsed to
        # floats on purpose: they are rejected per metric, so the valid
        # metrics beside them are kept), a byte order mark, UTF-16 and UTF-32,
        # and lone surrogates (refused there, with a clear message). Integers
        # beyond 64 bits come out as floats here, and either way outside
        # every range a beacon may use.
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = _decode_with_json_module(body)
    if not isinstance(data, dict):
        raise BeaconError(f"expected a JSON object, got {type(data).__name__}", field="$")
    return data


def _decode_with_json_module(body: bytes) -> Any:
    try:
        data = json.loads(body)
    except UnicodeDecodeError:
        raise BeaconError("body is not UTF-8", field="$") from None
    except json.JSONDecodeError as exc:
        raise BeaconError(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", field="$") from None
    except RecursionError:
        raise BeaconError("JSON nested too deeply", field="$") from None
    # A \ud800 escape is JSON, but no text: no UTF-8 encoder takes it, the
    # database's and the stream's included.
    if _holds_lone_surrogate(data):
        raise BeaconError("a string holds a lone surrogate (\\ud800-\\udfff); send Unicode text", field="$")
    return data


_SURROGATE = re.compile("[\ud800-\udfff]")


def _holds_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_holds_lone_surrogate(key) or _holds_lone_surrogate(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_holds_lone_surrogate(item) for item in value)
    return False


def _optional_str(data: dict[str, Any], key: str, max_length: int) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BeaconError(f"{key} must be a string", field=key)
    if len(value) > max_length:
        raise BeaconError(f"{key} is longer than {max_length} characters", field=key)
    return value


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def occurred_at_for(metric_id: str, *, received_at: datetime, sent_at_ms: float | None) -> datetime:
    """When the page view started, on the server's clock.

    The metric id carries the page's load time by the browser's clock; the
    difference between ``sent_at`` (browser clock) and ``received_at``
    (server clock) corrects for a wrong browser clock. Every report of one
    metric then lands in the same time bucket, however late it arrives.
    Without ``sent_at`` the clock cannot be corrected and the arrival time
    is used. The result is kept within the last day.
    """
    match = _ID_TIMESTAMP.match(metric_id)
    if match is None or sent_at_ms is None:
        return received_at
    received_ms = received_at.timestamp() * 1000
    started_ms = int(match.group(1)) + received_ms - sent_at_ms
    # Kept in range before it becomes a datetime: a sent_at of 1e300 is
    # finite, but no datetime.
    if started_ms >= received_ms:
        return received_at
    if started_ms <= received_ms - _DAY_MS:
        return received_at - timedelta(days=1)
    return datetime.fromtimestamp(started_ms / 1000, tz=UTC)


def _clean_attribution(raw: object) -> dict[str, Any]:
    """Keep scalar values and one level of nesting (serverTiming), strings
    shortened; drop the lot if it is still too large."""
    if type(raw) is not dict:
        return {}
    cleaned: dict[str, Any] = {}
    # By exact type, as decoded JSON has them: five attribution objects a
    # beacon, this is a good part of reading one.
    for key, value in itertools.islice(raw.items(), 40):
        if type(key) is not str or len(key) > 64:
            continue
        kind = type(value)
        if kind is str:
            cleaned[key] = value[:MAX_ATTRIBUTION_STRING]
        elif (
            kind is bool
            or (kind is float and math.isfinite(value))
            or (kind is int and _MIN_STORABLE_INT <= value <= _MAX_STORABLE_INT)
        ):
            cleaned[key] = value
        elif kind is dict:
            nested = {k: v for k, v in itertools.islice(value.items(), 10) if type(k) is str and _is_storable_number(v)}
            if nested:
                cleaned[key] = nested
    if len(orjson.dumps(cleaned)) > MAX_ATTRIBUTION_BYTES:
        return {}
    return cleaned


# The stream's JSON (orjson) takes integers of at most 64 bits.
_MIN_STORABLE_INT = -(2**63)
_MAX_STORABLE_INT = 2**64 - 1


def _is_storable_number(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return _is_number(value) and _MIN_STORABLE_INT <= value <= _MAX_STORABLE_INT


def _metric_error(errors: list[dict[str, str]], index: int, key: str, message: str) -> None:
    errors.append({"field": f"metrics[{index}].{key}" if key else f"metrics[{index}]", "error": message})


def parse_beacon(
    data: dict[str, Any],
    *,
    site: Site,
    rules: list[tuple[str, str]],
    client: ClientInfo,
    country: str,
    referer: str,
    received_at: datetime,
) -> ParsedBeacon:
    """Validate ``data`` (already decoded) and build metric records."""
    if "metrics" not in data and "name" in data and "value" in data:
        # A bare web-vitals Metric object, as in the web-vitals README's
        # sendToAnalytics example.
        metrics: object = [data]
        url = data.get("url") if isinstance(data.get("url"), str) else referer
        pageview = ""
    else:
        version = data.get("v", 1)
        if version != 1:
            raise BeaconError(f"unsupported beacon version {version!r}; expected 1", field="v")
        metrics = data.get("metrics")
        url = data.get("url")
        pageview = _optional_str(data, "pageview", 64)
        if pageview and not _PAGEVIEW.match(pageview):
            raise BeaconError("pageview must be letters, digits and dashes", field="pageview")
    if not isinstance(url, str) or not url:
        raise BeaconError("url is required (the page's address)", field="url")
    try:
        page = clean_url(url, keep_params=site.kept_query_params)
    except ValueError as exc:
        raise BeaconError(f"url: {exc}", field="url") from None
    if not isinstance(metrics, list) or not metrics:
        raise BeaconError("metrics must be a non-empty list", field="metrics")
    if len(metrics) > MAX_METRICS_PER_BEACON:
        raise BeaconError(f"at most {MAX_METRICS_PER_BEACON} metrics per beacon", field="metrics")

    # Over-long labels are cut rather than refused: the metrics still count.
    declared_route = _optional_str(data, "route", 2000)[:200]
    release = _optional_str(data, "release", 2000)[:100]
    connection = _optional_str(data, "connection", 16)
    connection = connection if connection in CONNECTIONS else ""
    sample_rate = data.get("sample_rate", 1)
    if not _is_number(sample_rate) or not 0 < sample_rate <= 1:
        raise BeaconError("sample_rate must be a number above 0 and at most 1", field="sample_rate")
    sent_at = data.get("sent_at")
    if sent_at is not None and not (_is_number(sent_at) and math.isfinite(sent_at)):
        raise BeaconError("sent_at must be a number of milliseconds since the epoch", field="sent_at")

    route = route_for(declared=declared_route or None, path=page.path, rules=rules, resolve_django=site.is_builtin)
    shared = {
        "site_id": site.pk,
        "received_at": received_at,
        "weight": 1 / sample_rate,
        "route": route,
        "path": page.path,
        "host": page.host,
        "release": release,
        "connection": connection,
        "device_class": client.device_class,
        "browser": client.browser[:40],
        "browser_major": client.browser_major[:8],
        "os": client.os[:40],
        "country": country,
    }
    if pageview:
        shared["pageview"] = pageview
    parsed = ParsedBeacon(shared)
    seen: dict[str, int] = {}
    moments: dict[str | None, tuple[date, datetime]] = {}
    for index, metric in enumerate(metrics):
        if not isinstance(metric, dict):
            _metric_error(parsed.errors, index, "", "each metric must be an object")
            continue
        name = metric.get("name")
        if name not in METRIC_NAMES:
            _metric_error(
                parsed.errors,
                index,
                "name",
                f"unknown metric {str(name)[:20]!r}; expected one of " + ", ".join(sorted(METRIC_NAMES)),
            )
            continue
        value = metric.get("value")
        if not _is_number(value):
            _metric_error(parsed.errors, index, "value", "value must be a number")
            continue
        if not math.isfinite(value):
            _metric_error(parsed.errors, index, "value", "value must be finite")
            continue
        if not 0 <= value <= VALUE_CAPS[name]:
            _metric_error(parsed.errors, index, "value", f"{name} must be between 0 and {VALUE_CAPS[name]:g}")
            continue
        metric_id = metric.get("id")
        if not isinstance(metric_id, str) or not _METRIC_ID.match(metric_id):
            _metric_error(parsed.errors, index, "id", "id must be 1 to 64 letters, digits or ._:-")
            continue
        navigation_type = metric.get("navigationType")
        # The metrics of one page view carry its load time in their ids: its
        # moment is worked out once.
        loaded = _ID_TIMESTAMP.match(metric_id)
        moment = moments.get(loaded and loaded.group(1))
        if moment is None:
            occurred_at = occurred_at_for(metric_id, received_at=received_at, sent_at_ms=sent_at)
            moment = moments[loaded and loaded.group(1)] = (occurred_at.date(), occurred_at)
        fields = {
            "day": moment[0],
            "occurred_at": moment[1],
            "metric_id": metric_id,
            "name": name,
            "value": float(value),
            "rating": rating_for(name, value),
            "navigation_type": navigation_type if navigation_type in NAVIGATION_TYPES else "",
            "attribution": _clean_attribution(metric.get("attribution")),
            REPORTED_BEFORE: not (_is_number(delta := metric.get("delta")) and delta == value),
        }
        if not pageview:
            fields["pageview"] = metric_id
        # A metric reported twice in one beacon counts once, with its latest value.
        if metric_id in seen:
            parsed.own[seen[metric_id]] = fields
        else:
            seen[metric_id] = len(parsed.own)
            parsed.own.append(fields)
    # The metrics of one page view start when it did (their ids carry its
    # load time), so their time is usually one of the shared fields too.
    if parsed.own and all(fields["occurred_at"] == parsed.own[0]["occurred_at"] for fields in parsed.own):
        shared["day"] = parsed.own[0]["day"]
        shared["occurred_at"] = parsed.own[0]["occurred_at"]
        for fields in parsed.own:
            del fields["day"], fields["occurred_at"]
    return parsed
