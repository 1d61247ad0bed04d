"""A deterministic set of raw metrics for the dashboard API tests, and the
exact answers computed from it in plain Python.

Rows are stored through ``metrics_store``, the code path of the worker, so
rollups are made (and re-reported metrics replaced) by the real code."""

import math
import random
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from apps.vitals.beacon import rating_for
from apps.vitals.models import Site
from apps.vitals.services import metrics_store

# On the hour, so that ranges ending here cover whole minute and hour buckets.
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
ROUTES = ("/", "/products/:id", "/search", "/checkout", "/blog/:slug")
DEVICES = ("mobile", "desktop", "tablet")
BROWSERS = ("Chrome", "Safari", "Firefox")
COUNTRIES = ("US", "DE", "JP", "")
CONNECTIONS = ("4g", "3g")
NAVIGATION_TYPES = ("navigate", "reload", "back-forward-cache")
RELEASES = ("2026.11.1", "2026.11.2")
SAMPLE_RATES = (1.0, 0.25)
MEDIANS = {"LCP": 2100.0, "INP": 150.0, "CLS": 0.05, "FCP": 1300.0, "TTFB": 500.0}
SPEED = {"mobile": 1.4, "desktop": 0.8, "tablet": 1.1}


def raw_record(site: Site, n: int, *, name: str, value: float, at: datetime, weight: float = 1.0, **dims: Any) -> dict:
    row: dict[str, Any] = {
        "site_id": site.pk,
        "day": at.date(),
        "occurred_at": at,
        "received_at": at + timedelta(seconds=3),
        "metric_id": f"v6-{int(at.timestamp() * 1000)}-{n}",
        "pageview": f"pv-{n // 10}",
        "name": name,
        "value": value,
        "rating": rating_for(name, value),
        "weight": weight,
        "route": "/",
        "path": "/",
        "host": "shop.example.com",
        "release": "",
        "navigation_type": "navigate",
        "connection": "4g",
        "device_class": "desktop",
        "browser": "Chrome",
        "browser_major": "131",
        "os": "Windows",
        "country": "",
        "attribution": {},
    }
    row.update(dims)
    return row


def seeded_records(site: Site, *, seed: int = 20261127, pageviews: int = 500, days: int = 4) -> list[dict]:
    """Page views spread over ``days`` before NOW (the last 48 hours land in
    minute rollups, older ones in hour rollups), each with the five metrics,
    at sample rate 1 or 0.25, on several routes, devices and releases."""
    rng = random.Random(seed)
    records = []
    for pv in range(pageviews):
        at = NOW - timedelta(seconds=rng.randrange(1, days * 86400))
        device = rng.choice(DEVICES)
        route = rng.choice(ROUTES)
        # Page views before the second release's day run the first one.
        release = RELEASES[0] if at < NOW - timedelta(days=2) else rng.choice(RELEASES)
        weight = 1 / rng.choice(SAMPLE_RATES)
        dims = {
            "route": route,
            "path": route.replace(":id", str(pv)).replace(":slug", f"post-{pv}"),
            "device_class": device,
            "browser": rng.choice(BROWSERS),
            "country": rng.choice(COUNTRIES),
            "connection": rng.choice(CONNECTIONS),
            "navigation_type": rng.choice(NAVIGATION_TYPES),
            "release": release,
            "pageview": f"pv-{pv}",
        }
        for i, name in enumerate(MEDIANS):
            if name == "CLS" and rng.random() < 0.4:
                value = 0.0  # no layout shift at all: common in the field
            else:
                value = MEDIANS[name] * SPEED[device] * math.exp(rng.gauss(0, 0.6))
                value = round(value, 4) if name == "CLS" else round(value, 1)
            records.append(raw_record(site, pv * 10 + i, name=name, value=value, at=at, weight=weight, **dims))
    return records


def re_reports(records: list[dict], *, seed: int = 1, share: float = 0.1) -> list[dict]:
    """Later reports of some INP and CLS metrics with larger values (the
    browser reports them again as the page lives on)."""
    rng = random.Random(seed)
    later = []
    for record in records:
        if record["name"] in ("INP", "CLS") and rng.random() < share:
            value = round(record["value"] * 1.5 + (50 if record["name"] == "INP" else 0.02), 4)
            later.append({**record, "value": value, "rating": rating_for(record["name"], value)})
    return later


def store(records: list[dict], *, batch: int = 1000) -> None:
    for start in range(0, len(records), batch):
        metrics_store(records=records[start : start + batch], now=NOW)


def latest(*batches: Iterable[dict]) -> list[dict]:
    """The raw rows as stored: the last report of each metric wins."""
    rows: dict[tuple[Any, ...], dict] = {}
    for batch in batches:
        for record in batch:
            rows[(record["site_id"], record["day"], record["metric_id"])] = record
    return list(rows.values())


def weighted_percentile(pairs: Iterable[tuple[float, float]], q: float) -> float | None:
    """The weighted inverted-CDF percentile: the smallest value whose
    cumulative weight reaches q·(total weight)."""
    ordered = sorted(pairs)
    total = sum(w for _, w in ordered)
    if not ordered:
        return None
    target = q * total
    cumulative = 0.0
    for value, weight in ordered:
        cumulative += weight
        if cumulative >= target - 1e-9:
            return value
    return ordered[-1][0]


def exact(
    rows: Iterable[dict], q: float, *, where: Callable[[dict], bool] = lambda r: True
) -> tuple[float | None, int]:
    """(percentile, sample count) of the rows ``where`` selects."""
    chosen = [(r["value"], r["weight"]) for r in rows if where(r)]
    return weighted_percentile(chosen, q), len(chosen)


def relative_error(shown: float | None, truth: float | None) -> float:
    if shown is None or truth is None:
        return 0.0 if shown is truth else math.inf
    if truth == 0:
        return 0.0 if shown == 0 else math.inf
    return abs(shown - truth) / abs(truth)
