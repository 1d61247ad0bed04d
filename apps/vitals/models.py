import secrets

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from apps.core.models import TimeStampedModel

BUILTIN_SITE = "perfhub"


def new_public_key() -> str:
    # Public: it sits in every page that carries the snippet. It only lets a
    # browser post beacons for its site, and can be rotated at any time.
    return secrets.token_urlsafe(18)


class Site(TimeStampedModel):
    name = models.SlugField(max_length=50, unique=True, help_text="Short name used in URLs and the API.")
    public_key = models.CharField(max_length=32, unique=True, default=new_public_key, editable=False)
    allowed_origins = models.JSONField(
        default=list,
        blank=True,
        help_text="Origins whose pages may send beacons, e.g. https://shop.example.com; '*' allows any.",
    )
    sample_rate = models.FloatField(
        default=1.0,
        validators=[MinValueValidator(0.0001), MaxValueValidator(1.0)],
        help_text="Share of page views that report, from 0.0001 to 1.",
    )
    retention_days = models.PositiveSmallIntegerField(
        default=30,
        validators=[MinValueValidator(1), MaxValueValidator(400)],
        help_text="How long raw metrics are kept; rollups are kept regardless.",
    )
    kept_query_params = models.JSONField(
        default=list,
        blank=True,
        help_text="Query parameters kept in stored URLs; all others are stripped.",
    )
    is_builtin = models.BooleanField(default=False, editable=False)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(sample_rate__gt=0, sample_rate__lte=1), name="vitals_site_sample_rate_range"
            ),
            models.CheckConstraint(
                condition=models.Q(retention_days__gte=1, retention_days__lte=400), name="vitals_site_retention_range"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class RouteRule(models.Model):
    """An ordered pattern → route mapping; the first rule whose pattern
    matches a page's path names its route."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="route_rules")
    position = models.PositiveSmallIntegerField(default=0)
    pattern = models.CharField(max_length=300, help_text=r"A regular expression, e.g. ^/products/\d+$")
    route = models.CharField(max_length=200, help_text="e.g. /products/:id")

    class Meta:
        ordering = ["site", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["site", "position"], name="vitals_routerule_site_position"),
        ]

    def __str__(self) -> str:
        return f"{self.pattern} → {self.route}"


class Rating(models.IntegerChoices):
    GOOD = 0, "good"
    NEEDS_IMPROVEMENT = 1, "needs-improvement"
    POOR = 2, "poor"


class Metric(models.Model):
    """One Web Vitals metric of one page view: the raw row.

    On PostgreSQL the table is partitioned by ``day`` (see migration 0002):
    its real primary key is (id, day) and (site, day, metric_id) is unique,
    which makes re-delivered and re-reported metrics count once. ``day`` is
    the UTC date of ``occurred_at``, the start of the page view, so every
    report of one metric lands in the same partition and time bucket.
    """

    id = models.BigAutoField(primary_key=True)
    # No database FK: rows arrive at tens of thousands per second, and
    # partitions are dropped wholesale at the retention horizon.
    site = models.ForeignKey(Site, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")
    day = models.DateField()
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField()
    metric_id = models.CharField(max_length=64)
    pageview = models.CharField(max_length=64)
    name = models.CharField(max_length=4)
    value = models.FloatField()
    rating = models.PositiveSmallIntegerField(choices=Rating.choices)
    weight = models.FloatField(default=1.0)
    route = models.CharField(max_length=200)
    path = models.CharField(max_length=512)
    host = models.CharField(max_length=255)
    release = models.CharField(max_length=100, blank=True)
    navigation_type = models.CharField(max_length=24, blank=True)
    connection = models.CharField(max_length=16, blank=True)
    device_class = models.CharField(max_length=8)
    browser = models.CharField(max_length=40)
    browser_major = models.CharField(max_length=8, blank=True)
    os = models.CharField(max_length=40)
    country = models.CharField(max_length=2, blank=True)
    attribution = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["site", "day", "metric_id"], name="vitals_metric_site_day_metric"),
        ]
        indexes = [
            # Rollup rebuilds and the raw export read one site's time range.
            models.Index(fields=["site", "occurred_at"], name="vitals_metric_site_time"),
        ]

    def __str__(self) -> str:
        return f"{self.name}={self.value:g} ({self.metric_id})"


# What a rollup row is per, besides its site and time bucket.
ROLLUP_DIMENSIONS = (
    "name",
    "route",
    "device_class",
    "browser",
    "country",
    "navigation_type",
    "release",
    "connection",
)


class Rollup(models.Model):
    """The metrics of one time bucket and one combination of dimensions:
    weighted counts by rating and a mergeable histogram (apps.vitals.sketch).
    A pure function of the raw rows in its bucket (see services.rollups_rebuild)."""

    MINUTE = 60
    HOUR = 3600

    # No database FK, as on Metric: a batch writes thousands of rollup rows,
    # and each would queue a deferred check against vitals_site for the
    # commit. Django still cascades a site's deletion to its rollups. No
    # index of its own either: the bucket key and the dashboard index both
    # start with site.
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="+", db_constraint=False, db_index=False)
    bucket_start = models.DateTimeField()
    bucket_seconds = models.PositiveIntegerField()
    name = models.CharField(max_length=4)
    route = models.CharField(max_length=200)
    device_class = models.CharField(max_length=8)
    browser = models.CharField(max_length=40)
    country = models.CharField(max_length=2, blank=True)
    navigation_type = models.CharField(max_length=24, blank=True)
    release = models.CharField(max_length=100, blank=True)
    connection = models.CharField(max_length=16, blank=True)
    samples = models.PositiveIntegerField(default=0, help_text="Metrics received (unweighted).")
    weight = models.FloatField(default=0.0, help_text="Page views represented (sample-rate weighted).")
    good = models.FloatField(default=0.0)
    needs_improvement = models.FloatField(default=0.0)
    poor = models.FloatField(default=0.0)
    value_sum = models.FloatField(default=0.0, help_text="Weighted sum of values, for means.")
    sketch = models.JSONField(default=dict)

    DIMENSIONS = ROLLUP_DIMENSIONS

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["site", "bucket_seconds", "bucket_start", *ROLLUP_DIMENSIONS],
                name="vitals_rollup_bucket_key",
            ),
            models.CheckConstraint(condition=models.Q(bucket_seconds__in=[60, 3600]), name="vitals_rollup_bucket_size"),
        ]
        indexes = [
            # Dashboards read one site and metric over a time range.
            models.Index(fields=["site", "name", "bucket_start"], name="vitals_rollup_site_name_time"),
        ]

    def __str__(self) -> str:
        return f"{self.site_id} {self.name} {self.route} @ {self.bucket_start:%Y-%m-%d %H:%M} ({self.samples})"


# The dimensions a DimensionRollup row can be per; "site" means the whole site.
DIMENSION_GRAINS = (
    "site",
    "route",
    "device_class",
    "browser",
    "country",
    "connection",
    "navigation_type",
    "release",
)


class DimensionRollup(models.Model):
    """The metrics of one time block for one value of one dimension (or the
    whole site): the rollups the dashboards read.

    Rollup rows are per combination of all eight dimensions, so a site has
    nearly as many as raw rows; a 28-day overview would merge millions of
    them. These rows keep one dimension at a time, in blocks of an hour, six
    hours, a day and a week (apps.vitals.rollups.LEVELS), so that any range
    is a handful of blocks and any page merges hundreds of rows, not
    millions. Questions that filter on two dimensions at once fall back to
    Rollup rows. Derived from the same deltas as Rollup rows, in the same
    transaction (apps.vitals.rollups.RollupDelta), and just as rebuildable.
    """

    # No database FK, as on Rollup: written in bulk with every batch.
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="+", db_constraint=False, db_index=False)
    dimension = models.CharField(max_length=16, choices=[(d, d) for d in DIMENSION_GRAINS])
    bucket_seconds = models.PositiveIntegerField()
    bucket_start = models.DateTimeField()
    name = models.CharField(max_length=4)
    value = models.CharField(max_length=200, blank=True, help_text="The dimension's value; blank for the whole site.")
    samples = models.PositiveIntegerField(default=0, help_text="Metrics received (unweighted).")
    weight = models.FloatField(default=0.0, help_text="Page views represented (sample-rate weighted).")
    good = models.FloatField(default=0.0)
    needs_improvement = models.FloatField(default=0.0)
    poor = models.FloatField(default=0.0)
    value_sum = models.FloatField(default=0.0, help_text="Weighted sum of values, for means.")
    # The histogram (apps.vitals.sketch) in its dense form, as columns rather
    # than JSON: the zero bucket's weight, the lowest bucket's index, and the
    # little-endian float64 weights of every bucket from there up. A 28-day
    # routes table reads ~1,500 blocks at once; as bytes they go from the
    # database to numpy with no JSON or base64 to decode on either side.
    sketch_zero = models.FloatField(default=0.0)
    sketch_offset = models.IntegerField(default=0)
    sketch_weights = models.BinaryField(default=b"")

    class Meta:
        constraints = [
            # Also the dashboards' index: they read one site, dimension and
            # level for a list of block starts.
            models.UniqueConstraint(
                fields=["site", "dimension", "bucket_seconds", "bucket_start", "name", "value"],
                name="vitals_dimrollup_block_key",
            ),
            models.CheckConstraint(
                condition=models.Q(bucket_seconds__in=[3600, 21600, 86400, 604800]),
                name="vitals_dimrollup_block_size",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.site_id} {self.dimension}={self.value} {self.name} @ {self.bucket_start:%Y-%m-%d %H:%M}"


class AttributionRollup(models.Model):
    """What the metrics of one time block, route and metric name blame: per
    element, resource, interaction target, script or shift source (``kind``
    and ``key``, see apps.vitals.attribution), the weighted page views, the
    weighted excess over the "good" threshold (the impact the dashboards
    rank by) and weighted sums of each phase, for their means. Blocks as
    DimensionRollup's; written in the same transaction from the same rows."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="+", db_constraint=False, db_index=False)
    bucket_seconds = models.PositiveIntegerField()
    bucket_start = models.DateTimeField()
    name = models.CharField(max_length=4)
    route = models.CharField(max_length=200)
    kind = models.CharField(max_length=16)
    key = models.CharField(max_length=200, blank=True)
    samples = models.IntegerField(default=0)
    weight = models.FloatField(default=0.0)
    value_sum = models.FloatField(default=0.0, help_text="Weighted sum of the metric's values.")
    excess_sum = models.FloatField(default=0.0, help_text="Weighted sum of how far values exceed “good”.")
    phase_sums = models.JSONField(default=dict, help_text="Phase name to the weighted sum of its durations.")
    phase_weights = models.JSONField(default=dict, help_text="Phase name to the weight of metrics reporting it.")

    class Meta:
        constraints = [
            # Also the attribution pages' index: one site, level and list of
            # block starts, then the metric name.
            models.UniqueConstraint(
                fields=["site", "bucket_seconds", "bucket_start", "name", "route", "kind", "key"],
                name="vitals_attrrollup_block_key",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.site_id} {self.name} {self.kind}={self.key} @ {self.bucket_start:%Y-%m-%d %H:%M}"
