import gc
import math
import random
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from apps.vitals.beacon import BeaconError, parse_beacon
from apps.vitals.models import RouteRule, Site
from apps.vitals.normalize import parse_user_agent
from apps.vitals.services import PreparedBatch, metrics_prepare, metrics_write
from apps.vitals.stream import gc_tuned_for_batches

# Shapes of real field data: medians and spreads of log-normal distributions
# per metric, roughly as CrUX shows them for a mid-sized shop. Mobile is
# slower than desktop; CLS is exactly 0 on most page views.
MEDIANS = {"LCP": 1900.0, "INP": 110.0, "CLS": 0.04, "FCP": 1150.0, "TTFB": 450.0}
SIGMAS = {"LCP": 0.55, "INP": 0.8, "CLS": 0.9, "FCP": 0.5, "TTFB": 0.6}
DEVICE_FACTOR = {"mobile": 1.35, "tablet": 1.15, "desktop": 0.8}
ROUTES = [  # (path template, weight, speed factor)
    ("/", 30, 0.9),
    ("/products/{n}", 35, 1.1),
    ("/search", 12, 1.2),
    ("/cart", 8, 0.8),
    ("/checkout", 5, 1.3),
    ("/blog/post-{n}", 10, 0.95),
]
USER_AGENTS = [  # (user agent, weight)
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Mobile Safari/537.36",
        30,
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/18.1 Mobile/15E148 Safari/604.1",
        25,
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36",
        25,
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/18.1 Safari/605.1.15",
        8,
    ),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0", 6),
    (
        "Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/18.1 Mobile/15E148 Safari/604.1",
        6,
    ),
]
COUNTRIES = [("US", 35), ("DE", 15), ("GB", 12), ("IN", 12), ("BR", 8), ("FR", 8), ("JP", 10)]
CONNECTIONS = [("4g", 85), ("3g", 12), ("2g", 3)]
NAVIGATION_TYPES = [("navigate", 78), ("reload", 5), ("back-forward-cache", 10), ("prerender", 4), ("back-forward", 3)]
# Page views per write: 50,000 metrics, as many as a worker's batch or more,
# so that each hour, day and week block is rewritten a few times, not once
# per thousand metrics.
BATCH_PAGEVIEWS = 10_000


def _pick(rng: random.Random, choices: list[tuple[Any, int]]) -> Any:
    return rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]


@dataclass
class _Demo:
    """The page views to generate, in time order, batch by batch."""

    site: Site
    rules: list[tuple[str, str]]
    rng: random.Random
    pageviews: int
    days: int
    sample_rate: float
    beacon: Callable[..., dict[str, Any]]
    now: datetime = field(default_factory=timezone.now)

    def __post_init__(self) -> None:
        self.clients = [(parse_user_agent(ua), weight) for ua, weight in USER_AGENTS]
        self.releases = [f"2026.{n:02d}.1-demo" for n in range(1, 4)]
        self.start = self.now - timedelta(days=self.days)
        self.span = (self.now - self.start).total_seconds()

    def batch(self, first: int) -> PreparedBatch:
        """Page views ``first`` to ``first + BATCH_PAGEVIEWS``, parsed by the
        endpoint's code and prepared for metrics_write (no database)."""
        records: list[dict[str, Any]] = []
        rng = self.rng
        for index in range(first, min(first + BATCH_PAGEVIEWS, self.pageviews)):
            # In time order, as real traffic arrives: each batch then
            # touches the rollup blocks of a few hours, not of every day.
            at = self.start + timedelta(seconds=(index + rng.random()) / self.pageviews * self.span)
            # Releases roll out over the period; each is a little faster.
            release_index = min(
                int((at - self.start).total_seconds() / self.span * len(self.releases)), len(self.releases) - 1
            )
            client = _pick(rng, self.clients)
            path_template, _, route_factor = rng.choices(ROUTES, weights=[r[1] for r in ROUTES])[0]
            beacon = self.beacon(
                rng,
                at=at,
                path=path_template.format(n=rng.randint(1, 500)),
                factor=route_factor * DEVICE_FACTOR[client.device_class] * (1 - 0.07 * release_index),
                release=self.releases[release_index],
                sample_rate=self.sample_rate,
            )
            try:
                parsed = parse_beacon(
                    beacon,
                    site=self.site,
                    rules=self.rules,
                    client=client,
                    country=_pick(rng, COUNTRIES),
                    referer="",
                    received_at=at + timedelta(seconds=5),
                )
            except BeaconError as exc:
                raise CommandError(f"generated beacon refused: {exc.message}") from exc
            records.extend(parsed.records)
        return metrics_prepare(records=records, now=self.now)


class Command(BaseCommand):
    help = "Write realistic demo Web Vitals for a site through the ingestion code, spread over the last D days."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--site", default="demo", help="Site name; created (any origin allowed) if missing.")
        parser.add_argument("--pageviews", type=int, default=10_000, help="Page views to generate (5 metrics each).")
        parser.add_argument("--days", type=int, default=7, help="Spread the page views over this many past days.")
        parser.add_argument("--seed", type=int, default=None, help="Random seed, for a repeatable data set.")
        parser.add_argument("--sample-rate", type=float, default=1.0, help="Sample rate the beacons claim.")

    def handle(
        self, *args: object, site: str, pageviews: int, days: int, seed: int | None, sample_rate: float, **options: Any
    ) -> None:
        if pageviews < 1:
            raise CommandError("--pageviews must be at least 1.")
        if not 1 <= days <= 400:
            raise CommandError("--days must be between 1 and 400.")
        if not 0 < sample_rate <= 1:
            raise CommandError("--sample-rate must be above 0 and at most 1.")
        target, _ = Site.objects.get_or_create(name=site, defaults={"allowed_origins": ["*"]})
        demo = _Demo(
            site=target,
            rules=list(RouteRule.objects.filter(site=target).values_list("pattern", "route")),
            rng=random.Random(seed),  # noqa: S311 - demo data, not security
            pageviews=pageviews,
            days=days,
            sample_rate=sample_rate,
            beacon=self._beacon,
        )
        written = 0
        began = time.monotonic()
        batches = range(0, pageviews, BATCH_PAGEVIEWS)
        # Page views are generated and their rollup deltas summed (Python)
        # on a helper thread while this one writes the previous batch
        # (mostly waiting on the database, which releases the GIL). One
        # thread, so the random generator runs in order: a seed still gives
        # the same data.
        with gc_tuned_for_batches(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="vitals-demo") as generator:
            following = generator.submit(demo.batch, batches[0])
            for first in batches:
                batch = following.result()
                if first + BATCH_PAGEVIEWS < pageviews:
                    following = generator.submit(demo.batch, first + BATCH_PAGEVIEWS)
                metrics_write(batch=batch)
                written += len(batch.latest)
                # Collection is off while batches are written (gc_tuned_for_batches).
                del batch
                gc.collect()
                self._progress(min(first + BATCH_PAGEVIEWS, pageviews), pageviews, written, began)
        self.stdout.write("")
        elapsed = time.monotonic() - began
        self.stdout.write(
            self.style.SUCCESS(
                f"Wrote {written:,} metrics from {pageviews:,} page views to site '{target.name}' "
                f"in {elapsed:.1f}s ({written / max(elapsed, 1e-9):,.0f} metrics/s)."
            )
        )

    def _beacon(
        self, rng: random.Random, *, at: datetime, path: str, factor: float, release: str, sample_rate: float
    ) -> dict[str, Any]:
        started_ms = int(at.astimezone(UTC).timestamp() * 1000)
        metrics = []
        for name, median in MEDIANS.items():
            if name == "CLS" and rng.random() < 0.6:
                value = 0.0
            else:
                scale = factor if name != "CLS" else 1.0
                value = median * scale * math.exp(rng.gauss(0, SIGMAS[name]))
                value = min(value, 100.0 if name == "CLS" else 120_000.0)
            value = round(value, 4 if name == "CLS" else 1)
            metrics.append(
                {
                    "name": name,
                    "value": value,
                    # Each metric's first and only report, as web-vitals sends it.
                    "delta": value,
                    "id": f"v6-{started_ms}-{rng.randrange(10**12, 10**13)}",
                    "navigationType": _pick(rng, NAVIGATION_TYPES),
                    "attribution": self._attribution(rng, name, path),
                }
            )
        return {
            "v": 1,
            "pageview": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "url": f"https://shop.example.com{path}",
            "release": release,
            "sample_rate": sample_rate,
            "connection": _pick(rng, CONNECTIONS),
            "sent_at": started_ms + 5000,
            "metrics": metrics,
        }

    @staticmethod
    def _attribution(rng: random.Random, name: str, path: str) -> dict[str, Any]:
        if name == "LCP":
            hero = rng.choice(["img.hero", "main > h1", "img.product-photo", "div.banner"])
            return {"target": hero, "url": f"https://cdn.example.com{path}/hero.jpg" if "img" in hero else ""}
        if name == "INP":
            return {"interactionTarget": rng.choice(["button.add-to-cart", "input#search", "a.nav-link"])}
        if name == "CLS":
            return {"largestShiftTarget": rng.choice(["div.ad-slot", "img.lazy", "footer"])}
        return {}

    def _progress(self, done: int, total: int, written: int, began: float) -> None:
        width = 30
        filled = int(width * done / total)
        rate = written / max(time.monotonic() - began, 1e-9)
        line = (
            f"\r[{'#' * filled}{'.' * (width - filled)}] {done * 100 // total:3d}%  {written:,} metrics  {rate:,.0f}/s"
        )
        self.stdout.write(line, ending="")
        if hasattr(self.stdout, "flush"):
            self.stdout.flush()
        elif sys.stdout.isatty():
            sys.stdout.flush()
