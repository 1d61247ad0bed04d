import logging
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypedDict

import numpy as np
from django.core.cache import cache
from django.db import DatabaseError, connections
from django.db.models import BinaryField, BooleanField, Case, Count, F, Q, QuerySet, Sum, Value, When
from django.db.models.expressions import RawSQL
from django.utils import timezone

from apps.core.timeranges import CUSTOM, TimeRange, floor_to
from apps.vitals.attribution import SERVER_TIMING_PHASES, SPECS
from apps.vitals.beacon import THRESHOLDS, rating_for
from apps.vitals.filters import FILTER_DIMENSIONS, DashboardQuery
from apps.vitals.models import AttributionRollup, DimensionRollup, Rating, Rollup, Site
from apps.vitals.rollups import HOUR, AttributionAggregate, block_start, blocks
from apps.vitals.sketch import DenseSum, Sketch, dense_quantiles, dense_sums, dense_weights

logger = logging.getLogger(__name__)

# PerfHub's own pages read the built-in site's key on every render; the key
# changes only on rotation, which forgets this entry (see rum_snippet_forget).
RUM_SNIPPET_CACHE_KEY = "vitals:rum-snippet"
RUM_SNIPPET_CACHE_SECONDS = 60


def site_cache_key(public_key: str) -> str:
    """Where the beacon endpoint keeps a shared copy of a site, for use
    while the database is down."""
    return f"perfhub:vitals:site:{public_key}"


class RumSnippet(TypedDict):
    key: str
    sample_rate: str


def site_list() -> QuerySet[Site]:
    """Every site with its number of route rules, in name order (one query
    per page of the list)."""
    return Site.objects.annotate(route_rule_count=Count("route_rules")).order_by("name")


def site_get(*, name: str) -> QuerySet[Site]:
    """The site named ``name`` (empty if none), its route rules prefetched in order."""
    return Site.objects.filter(name=name).prefetch_related("route_rules")


def sample_rate_attribute(rate: float) -> str:
    """The sample rate as rum.js parses it (``parseFloat``): ``repr`` never
    rounds and never uses a locale's decimal comma."""
    return repr(float(rate))


def rum_snippet_builtin() -> RumSnippet | None:
    """The public key and sample rate of the built-in site, for the snippet
    on PerfHub's own pages; None when the site is missing or the database
    cannot be read (the pages then render without the snippet)."""
    try:
        cached = cache.get(RUM_SNIPPET_CACHE_KEY)
    except Exception:
        logger.warning("RUM snippet cache unavailable", exc_info=True)
        cached = None
    if cached is not None:
        # {} remembers that the site is missing, so pages do not ask again.
        return cached or None
    try:
        site = Site.objects.filter(is_builtin=True).only("public_key", "sample_rate").first()
    except DatabaseError:
        # A dashboard page must still render while PostgreSQL is down.
        logger.warning("built-in site unavailable for the RUM snippet", exc_info=True)
        return None
    snippet: RumSnippet | None = (
        RumSnippet(key=site.public_key, sample_rate=sample_rate_attribute(site.sample_rate)) if site else None
    )
    try:
        cache.set(RUM_SNIPPET_CACHE_KEY, snippet or {}, timeout=RUM_SNIPPET_CACHE_SECONDS)
    except Exception:
        logger.warning("RUM snippet cache unavailable", exc_info=True)
    return snippet


def rum_snippet_forget() -> None:
    """Drop the cached snippet of the built-in site, after its key or sample
    rate changed, so PerfHub's pages carry the new one at once."""
    try:
        cache.delete(RUM_SNIPPET_CACHE_KEY)
    except Exception:
        logger.warning("RUM snippet cache unavailable; PerfHub's pages keep the old key for a minute", exc_info=True)


# ---------------------------------------------------------------------------
# Dashboards: every figure below comes from Rollup rows (apps.vitals.rollups),
# merged per group; none reads raw Metric rows.
# ---------------------------------------------------------------------------

METRIC_ORDER = ("LCP", "INP", "CLS", "FCP", "TTFB")
CORE_WEB_VITALS = ("LCP", "INP", "CLS")
UNITS = {"LCP": "ms", "INP": "ms", "CLS": "", "FCP": "ms", "TTFB": "ms"}
# The performance score's weights: those of Vercel's Real Experience Score
# for the metrics a browser reports from real users (TTFB is shown, not scored).
SCORE_WEIGHTS = {"LCP": 0.30, "INP": 0.30, "CLS": 0.25, "FCP": 0.15}
# Routes with fewer samples than this are greyed as "too few samples".
MIN_ROUTE_SAMPLES = 20
# z for a two-sided 95% interval.
_Z95 = 1.959963984540054


@dataclass
class Group:
    """Merged rollup rows: weighted rating counts and one histogram."""

    samples: int = 0
    weight: float = 0.0
    good: float = 0.0
    needs_improvement: float = 0.0
    poor: float = 0.0
    value_sum: float = 0.0
    dense: DenseSum = field(default_factory=DenseSum)
    _sketch: Sketch | None = None

    def add_row(self, totals: tuple[Any, ...]) -> None:
        """Add a row's totals: samples, weight, good, needs improvement,
        poor, value sum and sketch (``_TOTALS`` after the bucket start)."""
        *sums, sketch = totals
        self.add_totals(*sums)
        self.dense.add_json(sketch)

    def add_totals(
        self, samples: int, weight: float, good: float, needs_improvement: float, poor: float, value_sum: float
    ) -> None:
        """Add a row's totals but its sketch."""
        self.samples += samples
        self.weight += weight
        self.good += good
        self.needs_improvement += needs_improvement
        self.poor += poor
        self.value_sum += value_sum
        self._sketch = None

    def add_group(self, other: "Group") -> None:
        self.samples += other.samples
        self.weight += other.weight
        self.good += other.good
        self.needs_improvement += other.needs_improvement
        self.poor += other.poor
        self.value_sum += other.value_sum
        self.dense.add(other.dense)
        self._sketch = None

    @property
    def sketch(self) -> Sketch:
        if self._sketch is None:
            self._sketch = self.dense.sketch()
        return self._sketch

    def quantile(self, q: float) -> float | None:
        return self.dense.quantile(q) if self.samples > 0 else None

    def shares(self) -> tuple[float, float, float]:
        """Good, needs-improvement and poor as fractions of the weight."""
        total = self.good + self.needs_improvement + self.poor
        if total <= 0:
            return (0.0, 0.0, 0.0)
        return (self.good / total, self.needs_improvement / total, self.poor / total)


def group_quantiles(groups: Sequence[Group], q: float) -> list[float | None]:
    """``[group.quantile(q) for group in groups]``, at once (``dense_quantiles``)."""
    answers = dense_quantiles([group.dense for group in groups], q)
    return [answer if group.samples > 0 else None for group, answer in zip(groups, answers, strict=True)]


def rating_name(name: str, value: float | None) -> str | None:
    """ "good", "needs-improvement" or "poor" for a percentile value, by
    web-vitals' thresholds; None when there is no value."""
    if value is None:
        return None
    return Rating(rating_for(name, value)).label


def grouped_rollups(
    query: DashboardQuery,
    *,
    by: tuple[str, ...] = (),
    names: tuple[str, ...] = METRIC_ORDER,
    time_range: TimeRange | None = None,
    per_bucket: bool = False,
) -> dict[tuple[Any, ...], Group]:
    """Rollup rows of ``query`` merged per (name, *by) — and per bucket of
    the range's resolution when ``per_bucket`` (the bucket start comes last
    in the key). One query.

    A question about at most one dimension (route, filters and ``by``
    together) reads DimensionRollup blocks: a few rows per group whatever the
    range. Anything finer — two dimensions at once, or minute buckets —
    reads Rollup rows."""
    time_range = time_range or query.time_range
    filters = query.filter_dict()
    if query.route is not None:
        filters["route"] = query.route
    dimensions = set(filters) | set(by)
    on_the_hour = block_start(time_range.start, HOUR) == time_range.start
    if len(dimensions) <= 1 and on_the_hour and not (per_bucket and time_range.resolution < HOUR):
        dimension = next(iter(dimensions), "site")
        rows = DimensionRollup.objects.filter(site=query.site, dimension=dimension, name__in=names)
        if dimension in filters:
            rows = rows.filter(value=filters[dimension])
        if per_bucket:
            rows = rows.filter(
                bucket_seconds=time_range.resolution,
                bucket_start__gte=time_range.start,
                bucket_start__lt=time_range.end,
            )
        else:
            open_end = time_range.preset != CUSTOM or time_range.end >= timezone.now()
            starts: dict[int, list[datetime]] = {}
            for seconds, start in blocks(time_range.start, time_range.end, open_end=open_end):
                starts.setdefault(seconds, []).append(start)
            condition = Q(pk__in=[])
            for seconds, block_starts in starts.items():
                condition |= Q(bucket_seconds=seconds, bucket_start__in=block_starts)
            rows = rows.filter(condition)
        # The dimension's value stands in for the dimension asked ``by``.
        return _group_blocks(
            rows, ("name", *("value" for _ in by)), per_bucket, time_range.resolution, (query.site.pk, dimension)
        )
    full = Rollup.objects.filter(
        site=query.site,
        name__in=names,
        bucket_start__gte=time_range.start,
        bucket_start__lt=time_range.end,
        **filters,
    )
    return _group(full, ("name", *by), per_bucket, time_range.resolution, stream=True)


_TOTALS = ("bucket_start", "samples", "weight", "good", "needs_improvement", "poor", "value_sum", "sketch")


def _group(
    rows: QuerySet[Any], key_fields: tuple[str, ...], per_bucket: bool, resolution: int, *, stream: bool
) -> dict[tuple[Any, ...], Group]:
    groups: dict[tuple[Any, ...], Group] = {}
    values = rows.values_list(*key_fields, *_TOTALS)
    for row in values.iterator(chunk_size=5000) if stream else values:
        key: tuple[Any, ...] = row[: len(key_fields)]
        if per_bucket:
            key = (*key, floor_to(row[len(key_fields)], resolution))
        group = groups.get(key)
        if group is None:
            group = groups[key] = Group()
        group.add_row(row[len(key_fields) + 1 :])
    return groups


# The totals but the sketch; the bucket start only when grouping by bucket.
_BLOCK_SUMS = _TOTALS[1:-1]
_BLOCK_SKETCH = ("sketch_zero", "sketch_offset")


class BlockWeights:
    """The sketch weights of the DimensionRollup blocks this process has
    read, per (site, dimension), by row and row version: "id:xmin", xmin
    being the transaction that wrote the row, which every update changes.

    A 28-day overview reads ~1,500 blocks and 2.9 MB of weights, and all but
    the few blocks still being written are the same on every request:
    fetching and decompressing them again was a quarter of the page's time.
    So the dashboards' query names the versions already here and gets the
    weights of only the other rows (``_fetch_blocks``); what it takes from
    here is what the database holds, in the same snapshot as the rest of the
    row. Bounded: past ``max_bytes`` it starts over, which is simpler than
    evicting the least used and costs one full read."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        # Per scope, {row id: (row version, weights)}.
        self._scopes: dict[tuple[int, str], dict[int, tuple[str, np.ndarray]]] = {}
        self._bytes = 0
        # gthread workers serve requests on several threads.
        self._lock = threading.Lock()

    def known(self, scope: tuple[int, str]) -> dict[str, np.ndarray]:
        """A copy of the scope's {row version: weights}: the query asks by
        it, and its answer is read against it, whatever other requests add
        or clear meanwhile."""
        with self._lock:
            return dict(self._scopes.get(scope, {}).values())

    def add(self, scope: tuple[int, str], fetched: list[tuple[int, str, np.ndarray]]) -> None:
        """Keep the (row id, row version, weights) fetched, in place of the
        row's older version."""
        size = sum(weights.nbytes for _, _, weights in fetched)
        with self._lock:
            if self._bytes + size > self.max_bytes:
                self._scopes.clear()
                self._bytes = 0
            entries = self._scopes.setdefault(scope, {})
            for row_id, version, weights in fetched:
                replaced = entries.get(row_id)
                if replaced is not None:
                    self._bytes -= replaced[1].nbytes
                entries[row_id] = (version, weights)
            self._bytes += size

    def clear(self) -> None:
        with self._lock:
            self._scopes.clear()
            self._bytes = 0


# Per worker process; a 28-day overview of one site holds ~3 MB.
block_weights = BlockWeights(max_bytes=64 * 2**20)


def _fetch_blocks(
    rows: QuerySet[Any], fields: tuple[str, ...], scope: tuple[int, str]
) -> tuple[list[tuple[Any, ...]], list[np.ndarray]]:
    """``rows.values_list(*fields)`` and each row's sketch weights, in one query.

    On PostgreSQL (the database backend's ``binary_cursor``,
    apps.metrics.db.postgresql) the weights of the rows whose version is in
    ``block_weights`` are not fetched again, and the rest come in the binary
    format: the text format sends bytea as hex, twice its size, for psycopg
    to decode back to bytes."""
    binary_cursor = getattr(connections[rows.db], "binary_cursor", None)
    if binary_cursor is None:
        fetched = list(rows.values_list(*fields, "sketch_weights"))
        return [row[:-1] for row in fetched], [dense_weights(row[-1]) for row in fetched]
    known = block_weights.known(scope)
    # "id:xmin", xmin being PostgreSQL's row version. One text value, so that
    # PostgreSQL hashes the list of known ones instead of scanning it per
    # row, and the list goes as one array literal. Constant SQL.
    version = RawSQL('"vitals_dimensionrollup"."id"::text || \':\' || "vitals_dimensionrollup"."xmin"::text', ())  # noqa: S611
    is_known = RawSQL(  # noqa: S611
        f"{version.sql} = ANY(%s::text[])",
        ("{" + ",".join(known) + "}",),
        output_field=BooleanField(),
    )
    values = rows.annotate(
        row_version=version,
        new_weights=Case(When(is_known, then=Value(None)), default=F("sketch_weights"), output_field=BinaryField()),
    ).values_list(*fields, "id", "row_version", "new_weights")
    sql, params = values.query.get_compiler(using=values.db).as_sql()
    with binary_cursor() as cursor:
        cursor.execute(sql, params)
        fetched = cursor.fetchall()
    weights = []
    new = []
    for *_, row_id, row_version, new_weights in fetched:
        if new_weights is None:
            weights.append(known[row_version])
        else:
            weights.append(dense_weights(new_weights))
            new.append((row_id, row_version, weights[-1]))
    if new:
        block_weights.add(scope, new)
    return [row[:-3] for row in fetched], weights


def _group_blocks(
    rows: QuerySet[Any], key_fields: tuple[str, ...], per_bucket: bool, resolution: int, scope: tuple[int, str]
) -> dict[tuple[Any, ...], Group]:
    """``_group`` for DimensionRollup blocks: the same groups and sums,
    added a column at a time with numpy rather than a row at a time, and the
    dense sketches of all the blocks added at once (``dense_sums``): a
    28-day routes table merges ~1,500 blocks. Fetched at once, not through a
    cursor."""
    fields = (*key_fields, "bucket_start") if per_bucket else key_fields
    fetched, blocks = _fetch_blocks(rows, (*fields, *_BLOCK_SUMS, *_BLOCK_SKETCH), scope)
    if not fetched:
        return {}
    columns = list(zip(*fetched, strict=True))
    width = len(key_fields)
    keys: list[tuple[Any, ...]] = list(zip(*columns[:width], strict=True))
    if per_bucket:
        keys = [(*key, floor_to(start, resolution)) for key, start in zip(keys, columns[width], strict=True)]
        del columns[width]
    positions: dict[tuple[Any, ...], int] = {}
    group_ids = np.fromiter((positions.setdefault(key, len(positions)) for key in keys), np.int64, len(keys))
    count = len(positions)
    # bincount adds each group's values in the rows' order, as a loop would.
    samples, *sums, zeros = (
        np.bincount(group_ids, weights=np.asarray(column, dtype=np.float64), minlength=count)
        for column in columns[width : width + len(_BLOCK_SUMS) + 1]
    )
    offsets = columns[-1]
    dense = [i for i, weights in enumerate(blocks) if len(weights)]
    summed = dense_sums(count, group_ids[dense].tolist(), [offsets[i] for i in dense], [blocks[i] for i in dense])
    groups: dict[tuple[Any, ...], Group] = {}
    for key, position in positions.items():
        group = groups[key] = Group()
        group.add_totals(int(samples[position]), *(float(column[position]) for column in sums))
        group.dense.zero = float(zeros[position])
        weights = summed[position]
        if weights is not None:
            group.dense.add_weights(*weights)
    return groups


@dataclass
class MetricCard:
    name: str
    unit: str
    value: float | None
    rating: str | None
    samples: int
    weight: float
    good_share: float
    needs_improvement_share: float
    poor_share: float
    previous_value: float | None
    change: float | None
    """Relative change against the previous period (0.1 = 10% higher)."""
    sparkline: list[tuple[datetime, float | None]]


@dataclass
class ScorePart:
    name: str
    weight: float
    score: float | None


@dataclass
class VitalsSummary:
    cards: list[MetricCard]
    core_web_vitals_pass: bool | None
    """LCP, INP and CLS all good at p75; None without data for all three."""
    score: float | None
    """0 to 100, the weighted log-normal scores of SCORE_WEIGHTS' metrics."""
    score_parts: list[ScorePart]


def metric_score(name: str, value: float) -> float:
    """0 to 1 on a log-normal curve, as Lighthouse scores: the "good"
    threshold scores 0.9 and the "poor" one 0.5 (their p10 and median
    control points)."""
    good, poor = THRESHOLDS[name]
    if value <= 0:
        return 1.0
    mu = math.log(poor)
    # Φ⁻¹(0.1) = -1.2815515655446004
    sigma = (math.log(poor) - math.log(good)) / 1.2815515655446004
    return 0.5 * math.erfc((math.log(value) - mu) / (sigma * math.sqrt(2)))


def performance_score(p75s: Mapping[str, float | None]) -> tuple[float | None, list[ScorePart]]:
    parts = []
    for name, weight in SCORE_WEIGHTS.items():
        value = p75s.get(name)
        parts.append(ScorePart(name=name, weight=weight, score=None if value is None else metric_score(name, value)))
    scored = [(p.weight, p.score) for p in parts if p.score is not None]
    if not scored:
        return None, parts
    total_weight = sum(weight for weight, _ in scored)
    return round(100 * sum(weight * score for weight, score in scored) / total_weight, 1), parts


def vitals_summary(query: DashboardQuery) -> VitalsSummary:
    """One card per metric, the Core Web Vitals assessment and the score. Two queries."""
    current = grouped_rollups(query, per_bucket=True)
    previous = grouped_rollups(query, time_range=query.time_range.previous())
    buckets = query.time_range.buckets()
    totals: dict[str, Group] = {}
    per_bucket: dict[str, dict[datetime, Group]] = {}
    for (name, bucket), group in current.items():
        totals.setdefault(name, Group()).add_group(group)
        per_bucket.setdefault(name, {})[bucket] = group
    cards = []
    p75s: dict[str, float | None] = {}
    for name in METRIC_ORDER:
        total = totals.get(name, Group())
        value = total.quantile(query.quantile)
        p75s[name] = total.quantile(0.75)
        before = previous.get((name,))
        previous_value = before.quantile(query.quantile) if before else None
        good, needs_improvement, poor = total.shares()
        series = per_bucket.get(name, {})
        shown = [bucket for bucket in buckets if bucket in series]
        points = dict(zip(shown, group_quantiles([series[bucket] for bucket in shown], query.quantile), strict=True))
        cards.append(
            MetricCard(
                name=name,
                unit=UNITS[name],
                value=value,
                rating=rating_name(name, value),
                samples=total.samples,
                weight=total.weight,
                good_share=good,
                needs_improvement_share=needs_improvement,
                poor_share=poor,
                previous_value=previous_value,
                change=_relative_change(previous_value, value),
                sparkline=[(bucket, points.get(bucket)) for bucket in buckets],
            )
        )
    core = {name: p75s[name] for name in CORE_WEB_VITALS}
    passes = None
    if all(v is not None for v in core.values()):
        passes = all(rating_for(name, v) == Rating.GOOD for name, v in core.items() if v is not None)
    score, parts = performance_score(p75s)
    return VitalsSummary(cards=cards, core_web_vitals_pass=passes, score=score, score_parts=parts)


def _relative_change(before: float | None, after: float | None) -> float | None:
    if before is None or after is None or before == 0:
        return None
    return (after - before) / before


@dataclass
class RouteMetric:
    value: float | None
    rating: str | None
    samples: int


@dataclass
class RouteRow:
    route: str
    pageviews: float
    """Sample-rate weighted page views: the largest weight of any metric on the
    route (every page view reports TTFB and FCP; not every one reports INP)."""
    samples: int
    metrics: dict[str, RouteMetric]
    too_few_samples: bool
    worst: float
    """The lowest metric score (0 to 1) of the route's values: the default sort, worst first."""


ROUTE_SORTS = ("route", "pageviews", "worst", *METRIC_ORDER)


def route_table(
    query: DashboardQuery,
    *,
    search: str = "",
    sort: str = "worst",
    descending: bool = False,
    min_samples: int = MIN_ROUTE_SAMPLES,
) -> list[RouteRow]:
    """Every route of the range with the percentile of each metric; routes
    under ``min_samples`` are kept, flagged, and sorted after the others.
    ``sort`` is one of ROUTE_SORTS; "worst" puts the worst scores first. One query."""
    if sort not in ROUTE_SORTS:
        raise ValueError(f"sort must be one of {', '.join(ROUTE_SORTS)}")
    groups = grouped_rollups(query.with_route(None) if query.route is None else query, by=("route",))
    routes: dict[str, dict[str, Group]] = {}
    for (name, route), group in groups.items():
        routes.setdefault(route, {})[name] = group
    needle = search.strip().lower()
    shown = [route for route in routes if not needle or needle in route.lower()]
    # Every route's every metric: hundreds of quantiles, asked a metric at a time.
    values: dict[tuple[str, str], float | None] = {}
    for name in METRIC_ORDER:
        having = [route for route in shown if name in routes[route]]
        answers = group_quantiles([routes[route][name] for route in having], query.quantile)
        values.update(((route, name), answer) for route, answer in zip(having, answers, strict=True))
    rows = []
    for route in shown:
        by_name = routes[route]
        metrics = {}
        scores = []
        for name in METRIC_ORDER:
            found = by_name.get(name)
            value = values.get((route, name))
            metrics[name] = RouteMetric(
                value=value, rating=rating_name(name, value), samples=found.samples if found else 0
            )
            if value is not None:
                scores.append(metric_score(name, value))
        samples = max((g.samples for g in by_name.values()), default=0)
        rows.append(
            RouteRow(
                route=route,
                pageviews=max((g.weight for g in by_name.values()), default=0.0),
                samples=samples,
                metrics=metrics,
                too_few_samples=samples < min_samples,
                worst=min(scores, default=1.0),
            )
        )

    def sort_key(row: RouteRow) -> Any:
        if sort == "route":
            return row.route
        if sort == "pageviews":
            return row.pageviews
        if sort == "worst":
            return row.worst
        value = row.metrics[sort].value
        # Routes without the metric go last whichever the direction.
        return (value is None) != descending, value or 0.0

    rows.sort(key=lambda r: r.route)
    rows.sort(key=sort_key, reverse=descending)
    # Too few samples: shown, greyed, after the rows that can be trusted.
    rows.sort(key=lambda r: r.too_few_samples)
    return rows


@dataclass
class SeriesPoint:
    bucket_start: datetime
    value: float | None
    samples: int


@dataclass
class ReleaseMarker:
    release: str
    first_seen: datetime


@dataclass
class MetricSeries:
    name: str
    percentile: int
    resolution: int
    good_threshold: float
    poor_threshold: float
    points: list[SeriesPoint]
    releases: list[ReleaseMarker]


def metric_series(query: DashboardQuery, *, name: str) -> MetricSeries:
    """The chosen percentile of ``name`` per bucket of the range's
    resolution, with the threshold lines and the first bucket each release
    was seen in. Two queries."""
    groups = grouped_rollups(query, names=(name,), per_bucket=True)
    releases = grouped_rollups(query, names=(name,), by=("release",), per_bucket=True)
    first_seen: dict[str, datetime] = {}
    for _, release, bucket in releases:
        if release and (release not in first_seen or bucket < first_seen[release]):
            first_seen[release] = bucket
    points = []
    for bucket in query.time_range.buckets():
        group = groups.get((name, bucket))
        points.append(
            SeriesPoint(
                bucket_start=bucket,
                value=group.quantile(query.quantile) if group else None,
                samples=group.samples if group else 0,
            )
        )
    good, poor = THRESHOLDS[name]
    return MetricSeries(
        name=name,
        percentile=query.percentile,
        resolution=query.time_range.resolution,
        good_threshold=good,
        poor_threshold=poor,
        points=points,
        releases=sorted((ReleaseMarker(r, s) for r, s in first_seen.items()), key=lambda m: m.first_seen),
    )


@dataclass
class HistogramBin:
    low: float
    high: float
    weight: float
    rating: str


def metric_histogram(query: DashboardQuery, *, name: str, bins: int = 40) -> list[HistogramBin]:
    """The distribution of ``name``'s values: the sketch's buckets folded into
    at most ``bins`` bins of equal width on a log scale (values span orders of
    magnitude). One query."""
    group = grouped_rollups(query, names=(name,)).get((name,))
    if group is None or group.samples <= 0:
        return []
    return [
        HistogramBin(low=low, high=high, weight=weight, rating=rating_name(name, high) or "")
        for low, high, weight in group.sketch.histogram(bins)
    ]


@dataclass
class BreakdownRow:
    value: str
    samples: int
    weight: float
    percentile_value: float | None
    rating: str | None


def metric_breakdown(query: DashboardQuery, *, name: str, dimension: str) -> list[BreakdownRow]:
    """The percentile of ``name`` per value of ``dimension`` (one of
    FILTER_DIMENSIONS or "route"), most page views first. One query."""
    if dimension not in (*FILTER_DIMENSIONS, "route"):
        raise ValueError(f"dimension must be one of {', '.join((*FILTER_DIMENSIONS, 'route'))}")
    groups = grouped_rollups(query, names=(name,), by=(dimension,))
    rows = [
        BreakdownRow(
            value=value,
            samples=group.samples,
            weight=group.weight,
            percentile_value=group.quantile(query.quantile),
            rating=rating_name(name, group.quantile(query.quantile)),
        )
        for (_, value), group in groups.items()
    ]
    rows.sort(key=lambda r: (-r.weight, r.value))
    return rows


@dataclass
class CompareSide:
    label: str
    value: float | None
    low: float | None
    high: float | None
    samples: int


@dataclass
class CompareRow:
    name: str
    route: str | None
    a: CompareSide
    b: CompareSide
    change: float | None
    beyond_noise: bool
    """True when the two 95% intervals do not overlap."""


COMPARE_METHOD = (
    "Each side's percentile comes with a distribution-free 95% interval: the values at ranks "
    "q ± 1.96·√(q(1−q)/n) of its histogram, n being its sample count. A change is beyond noise "
    "when the two intervals do not overlap."
)


def quantile_interval(group: Group, q: float) -> tuple[float | None, float | None]:
    """The 95% interval of quantile ``q`` from the order-statistic normal
    approximation: ranks q ± z·√(q(1−q)/n), read off the sketch."""
    if group.samples <= 0:
        return None, None
    spread = _Z95 * math.sqrt(q * (1 - q) / group.samples)
    return group.sketch.quantile(max(0.0, q - spread)), group.sketch.quantile(min(1.0, q + spread))


def _side(label: str, group: Group | None, q: float) -> CompareSide:
    if group is None:
        return CompareSide(label=label, value=None, low=None, high=None, samples=0)
    low, high = quantile_interval(group, q)
    return CompareSide(label=label, value=group.quantile(q), low=low, high=high, samples=group.samples)


def vitals_compare(
    a: DashboardQuery, b: DashboardQuery, *, a_label: str, b_label: str, by_route: bool = True
) -> list[CompareRow]:
    """Two questions side by side (two releases: the same range with a
    different release filter; two periods: different ranges), per metric and,
    with ``by_route``, per route. Four queries (two with ``by_route`` False);
    see COMPARE_METHOD."""
    q = a.quantile
    rows = []
    overall_a, overall_b = grouped_rollups(a), grouped_rollups(b)
    keys: list[tuple[str, str | None]] = [(name, None) for name in METRIC_ORDER]
    per_route_a: dict[tuple[Any, ...], Group] = {}
    per_route_b: dict[tuple[Any, ...], Group] = {}
    if by_route:
        per_route_a, per_route_b = grouped_rollups(a, by=("route",)), grouped_rollups(b, by=("route",))
        keys += sorted(
            {(n, r) for n, r in (*per_route_a, *per_route_b)}, key=lambda k: (METRIC_ORDER.index(k[0]), k[1])
        )
    for name, route in keys:
        key = (name,) if route is None else (name, route)
        group_a = (overall_a if route is None else per_route_a).get(key)
        group_b = (overall_b if route is None else per_route_b).get(key)
        side_a, side_b = _side(a_label, group_a, q), _side(b_label, group_b, q)
        beyond = (
            None not in (side_a.low, side_a.high, side_b.low, side_b.high)
            and (side_b.low > side_a.high or side_a.low > side_b.high)  # type: ignore[operator]
        )
        rows.append(
            CompareRow(
                name=name,
                route=route,
                a=side_a,
                b=side_b,
                change=_relative_change(side_a.value, side_b.value),
                beyond_noise=beyond,
            )
        )
    return rows


def beacons_last_minute(site: Site, *, now: datetime | None = None) -> int:
    """Metrics received for ``site`` whose page views started in the last
    minute, from the minute rollups. One query."""
    now = now or timezone.now()
    total = Rollup.objects.filter(
        site=site, bucket_seconds=Rollup.MINUTE, bucket_start__gte=floor_to(now - timedelta(minutes=1), 60)
    ).aggregate(total=Sum("samples"))["total"]
    return int(total or 0)


@dataclass
class AttributionPhase:
    phase: str
    label: str
    mean: float | None
    """Weighted mean in milliseconds (CLS's shift value unitless) over the
    metrics that reported the phase."""


@dataclass
class AttributionRow:
    kind: str
    kind_label: str
    key: str
    """The element, URL, target or script; "" for the page load as a whole."""
    samples: int
    weight: float
    impact: float
    """Page views × mean excess over the "good" threshold: how much of the
    metric's trouble this culprit explains. The ranking."""
    mean_value: float | None
    phases: list[AttributionPhase]


ATTRIBUTION_FILTERS_NOTE = "Attribution is counted per route; the other filters do not apply to it."


def attribution_top(query: DashboardQuery, *, name: str, limit: int = 10) -> list[AttributionRow]:
    """The culprits of ``name`` in the range (and route, if chosen), each
    kind's top ``limit`` by impact then page views, kinds in SPECS' order.
    Read from AttributionRollup blocks, the range's start rounded down to the
    hour. One query."""
    if name not in SPECS:
        raise ValueError(f"name must be one of {', '.join(SPECS)}")
    time_range = query.time_range
    start = block_start(time_range.start, HOUR)
    open_end = time_range.preset != CUSTOM or time_range.end >= timezone.now()
    condition = Q(pk__in=[])
    for seconds, begin in blocks(start, time_range.end, open_end=open_end):
        condition |= Q(bucket_seconds=seconds, bucket_start=begin)
    rows = AttributionRollup.objects.filter(condition, site=query.site, name=name)
    if query.route is not None:
        rows = rows.filter(route=query.route)
    merged: dict[tuple[str, str], AttributionAggregate] = {}
    for kind_name, key, *totals in rows.values_list(
        "kind", "key", "samples", "weight", "value_sum", "excess_sum", "phase_sums", "phase_weights"
    ).iterator(chunk_size=5000):
        samples, weight, value_sum, excess_sum, phase_sums, phase_weights = totals
        target = merged.setdefault((kind_name, key), AttributionAggregate())
        target.merge(AttributionAggregate(samples, weight, value_sum, excess_sum, phase_sums, phase_weights))
    spec = SPECS[name]
    phase_labels = {**dict(spec.phases), **dict(SERVER_TIMING_PHASES)}
    out: list[AttributionRow] = []
    for kind in spec.kinds:
        found = [(key, agg) for (k, key), agg in merged.items() if k == kind.name and agg.samples > 0]
        found.sort(key=lambda item: (-item[1].excess_sum, -item[1].weight, item[0]))
        for key, agg in found[:limit]:
            phases = SERVER_TIMING_PHASES if kind.name == "server" else spec.phases
            out.append(
                AttributionRow(
                    kind=kind.name,
                    kind_label=kind.label,
                    key=key,
                    samples=agg.samples,
                    weight=agg.weight,
                    impact=agg.excess_sum,
                    mean_value=agg.value_sum / agg.weight if agg.weight > 0 else None,
                    phases=[
                        AttributionPhase(
                            phase=phase,
                            label=phase_labels[phase],
                            mean=(agg.phase_sums[phase] / agg.phase_weights[phase])
                            if agg.phase_weights.get(phase, 0) > 0
                            else None,
                        )
                        for phase, _ in phases
                    ],
                )
            )
    return out
