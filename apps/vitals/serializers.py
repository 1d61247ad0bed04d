"""The JSON shapes of the Web Vitals API, and the parameters its endpoints
take besides the dashboard question (apps.vitals.filters).

Output field names are those of the selectors' dataclasses, so a script
reading ``/summary`` and a test comparing it with the overview page use the
same words as the code."""

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from django import forms
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from apps.core.timeranges import TimeRange, time_range_custom
from apps.vitals.filters import FILTER_DIMENSIONS, DashboardQuery, DashboardQueryForm
from apps.vitals.models import Site
from apps.vitals.selectors import METRIC_ORDER, MIN_ROUTE_SAMPLES, ROUTE_SORTS

# ---------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------


def _form_parameter(name: str, field: forms.Field) -> OpenApiParameter:
    """The OpenAPI description of one DashboardQueryForm field, read from the
    form itself so the schema cannot drift from what the API accepts."""
    kind: Any = OpenApiTypes.STR
    if isinstance(field, forms.DateTimeField):
        kind = OpenApiTypes.DATETIME
    enum = None
    if isinstance(field, forms.ChoiceField):
        # The form's choices are fixed lists of pairs, never a callable.
        enum = [str(value) for value, _ in cast(list[tuple[Any, str]], field.choices) if value != ""]
    label = field.label or name.replace("_", " ").capitalize()
    description = f"{label}. {field.help_text}" if field.help_text else f"{label}."
    if field.initial is not None:
        description += f" Default: {field.initial}."
    return OpenApiParameter(name, kind, OpenApiParameter.QUERY, required=False, description=description, enum=enum)


SITE_PARAMETER = OpenApiParameter(
    "site", OpenApiTypes.STR, OpenApiParameter.PATH, description="The site's name (its slug)."
)
# Every per-site endpoint: the site, then the dashboard question.
DASHBOARD_PARAMETERS = [
    SITE_PARAMETER,
    *(_form_parameter(name, field) for name, field in DashboardQueryForm.base_fields.items()),
]


class RouteOrderParams(serializers.Serializer):
    """Which routes, in which order (the routes table and its export)."""

    search = serializers.CharField(
        required=False, allow_blank=True, max_length=200, default="", help_text="Part of a route, any case."
    )
    sort = serializers.ChoiceField(choices=ROUTE_SORTS, default="worst", help_text="Column to sort by.")
    order = serializers.ChoiceField(
        choices=["asc", "desc"],
        required=False,
        help_text="Default: worst first, i.e. asc for worst and route, desc for page views and metrics.",
    )
    min_samples = serializers.IntegerField(
        min_value=0,
        max_value=1_000_000,
        default=MIN_ROUTE_SAMPLES,
        help_text="Routes with fewer samples are flagged too_few_samples and listed last.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs.get("order"):
            attrs["order"] = "asc" if attrs["sort"] in ("worst", "route") else "desc"
        attrs["descending"] = attrs["order"] == "desc"
        return attrs


class RoutesParams(RouteOrderParams):
    page = serializers.IntegerField(min_value=1, default=1)
    page_size = serializers.IntegerField(min_value=1, max_value=500, default=50)


class MetricParams(serializers.Serializer):
    name = serializers.ChoiceField(choices=METRIC_ORDER, help_text="The metric.")


class BreakdownParams(MetricParams):
    dimension = serializers.ChoiceField(choices=[*FILTER_DIMENSIONS, "route"], help_text="What to break down by.")


class AttributionParams(MetricParams):
    limit = serializers.IntegerField(min_value=1, max_value=100, default=10, help_text="Rows per kind.")


@dataclass(frozen=True)
class ComparePlan:
    a: DashboardQuery
    b: DashboardQuery
    a_label: str
    b_label: str


class CompareParams(serializers.Serializer):
    mode = serializers.ChoiceField(
        choices=["releases", "periods"],
        default="periods",
        help_text="releases: a_release against b_release over the chosen range; periods: a_start–a_end against "
        "b_start–b_end, or, without them, the previous period against the chosen range.",
    )
    a_release = serializers.CharField(required=False, max_length=100)
    b_release = serializers.CharField(required=False, max_length=100)
    a_start = serializers.DateTimeField(required=False)
    a_end = serializers.DateTimeField(required=False)
    b_start = serializers.DateTimeField(required=False)
    b_end = serializers.DateTimeField(required=False)
    by_route = serializers.BooleanField(default=True, help_text="Also compare route by route.")

    _BOUNDS = ("a_start", "a_end", "b_start", "b_end")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["mode"] == "releases":
            missing = {f: "Needed to compare two releases." for f in ("a_release", "b_release") if not attrs.get(f)}
            if missing:
                raise serializers.ValidationError(missing)
            return attrs
        given = [f for f in self._BOUNDS if attrs.get(f)]
        if given and len(given) < len(self._BOUNDS):
            raise serializers.ValidationError(
                {f: "Give all of a_start, a_end, b_start and b_end, or none." for f in self._BOUNDS if f not in given}
            )
        if given:
            attrs["a_range"] = self._range(attrs, "a")
            attrs["b_range"] = self._range(attrs, "b")
        return attrs

    @staticmethod
    def _range(attrs: dict[str, Any], side: str) -> TimeRange:
        try:
            return time_range_custom(attrs[f"{side}_start"], attrs[f"{side}_end"])
        except DjangoValidationError as exc:
            raise serializers.ValidationError({f"{side}_end": exc.messages}) from exc

    def plan(self, query: DashboardQuery) -> ComparePlan:
        """The two questions to put side by side; call after is_valid()."""
        data = self.validated_data
        if data["mode"] == "releases":
            return ComparePlan(
                a=query.with_filter("release", data["a_release"]),
                b=query.with_filter("release", data["b_release"]),
                a_label=data["a_release"],
                b_label=data["b_release"],
            )
        b_range = data.get("b_range", query.time_range)
        a_range = data.get("a_range", query.time_range.previous())
        return ComparePlan(
            a=query.with_range(a_range), b=query.with_range(b_range), a_label=a_range.label, b_label=b_range.label
        )


EXPORT_KINDS = ("routes", "series", "raw")
EXPORT_FORMATS = ("csv", "json", "ndjson")
EXPORT_DEFAULT_LIMIT = 10_000
# A page of raw rows small enough to stream in a few seconds and to hold in
# a spreadsheet; bigger exports follow the cursor.
EXPORT_MAX_LIMIT = 100_000


def cursor_encode(occurred_at: datetime, pk: int) -> str:
    """An opaque position in the raw rows' (occurred_at, id) order."""
    return base64.urlsafe_b64encode(f"{occurred_at.isoformat()}|{pk}".encode()).decode().rstrip("=")


def cursor_decode(cursor: str) -> tuple[datetime, int]:
    """Raises ValueError for anything cursor_encode did not make."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, pk = text.split("|")
        occurred_at = datetime.fromisoformat(moment)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError("not a cursor from this API") from exc
    if occurred_at.tzinfo is None or not pk.isdigit():
        raise ValueError("not a cursor from this API")
    return occurred_at, int(pk)


class ExportParams(RouteOrderParams):
    kind = serializers.ChoiceField(
        choices=EXPORT_KINDS,
        help_text="routes: the routes table; series: a metric's percentile per bucket (needs name); "
        "raw: the stored metric rows of the range, oldest first, a page at a time.",
    )
    format = serializers.ChoiceField(choices=EXPORT_FORMATS, default="csv")
    name = serializers.ChoiceField(
        choices=METRIC_ORDER, required=False, help_text="The metric: required for series, a filter for raw."
    )
    after = serializers.CharField(
        required=False, max_length=200, help_text="raw: the cursor from the previous page's Link header."
    )
    limit = serializers.IntegerField(
        min_value=1,
        max_value=EXPORT_MAX_LIMIT,
        default=EXPORT_DEFAULT_LIMIT,
        help_text="raw: rows per response.",
    )

    def validate_after(self, value: str) -> tuple[datetime, int]:
        try:
            return cursor_decode(value)
        except ValueError:
            raise serializers.ValidationError("Not a cursor from this API; follow the Link header.") from None

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        if attrs["kind"] == "series" and not attrs.get("name"):
            raise serializers.ValidationError({"name": "A series export needs the metric's name."})
        return attrs


# ---------------------------------------------------------------------------
# Answers
# ---------------------------------------------------------------------------


class TimeRangeSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    resolution = serializers.IntegerField(help_text="Bucket size in seconds.")
    preset = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]  # see CompareSideSerializer.label


class AnswerSerializer(serializers.Serializer):
    """What every per-site answer starts with: the question it answers."""

    site = serializers.CharField()
    range = TimeRangeSerializer()
    percentile = serializers.IntegerField()
    route = serializers.CharField(allow_null=True)
    filters = serializers.DictField(child=serializers.CharField())


def answer(query: DashboardQuery, **data: Any) -> dict[str, Any]:
    """The instance an AnswerSerializer subclass renders."""
    return {
        "site": query.site.name,
        "range": query.time_range,
        "percentile": query.percentile,
        "route": query.route,
        "filters": query.filter_dict(),
        **data,
    }


class SiteSerializer(serializers.Serializer):
    # The public key is left out on purpose: it lets anyone who has it post
    # beacons for the site, and a read token is for reading. Staff see it on
    # the site's page, next to the snippet.
    name = serializers.CharField()
    is_builtin = serializers.BooleanField()
    sample_rate = serializers.FloatField()
    retention_days = serializers.IntegerField()
    links = serializers.SerializerMethodField()

    SITE_ENDPOINTS = ("summary", "routes", "series", "histogram", "breakdown", "attribution", "compare", "export")

    @extend_schema_field(serializers.DictField(child=serializers.URLField()))
    def get_links(self, site: Site) -> dict[str, str]:
        request = self.context["request"]
        return {
            endpoint: reverse(f"api-site-{endpoint}", kwargs={"site": site.name}, request=request)
            for endpoint in self.SITE_ENDPOINTS
        }


class SparkPointSerializer(serializers.Serializer):
    bucket_start = serializers.DateTimeField()
    value = serializers.FloatField(allow_null=True)

    def to_representation(self, instance: Any) -> Any:
        # The selector's sparkline is a list of (bucket_start, value) pairs.
        bucket_start, value = instance
        return super().to_representation({"bucket_start": bucket_start, "value": value})


class MetricCardSerializer(serializers.Serializer):
    name = serializers.CharField()
    unit = serializers.CharField()
    value = serializers.FloatField(allow_null=True)
    rating = serializers.CharField(allow_null=True)
    samples = serializers.IntegerField()
    weight = serializers.FloatField()
    good_share = serializers.FloatField()
    needs_improvement_share = serializers.FloatField()
    poor_share = serializers.FloatField()
    previous_value = serializers.FloatField(allow_null=True)
    change = serializers.FloatField(allow_null=True, help_text="Relative change against the previous period.")
    sparkline = SparkPointSerializer(many=True)


class ScorePartSerializer(serializers.Serializer):
    name = serializers.CharField()
    weight = serializers.FloatField()
    score = serializers.FloatField(allow_null=True, help_text="0 to 1.")


class SummarySerializer(AnswerSerializer):
    cards = MetricCardSerializer(many=True)
    core_web_vitals_pass = serializers.BooleanField(allow_null=True)
    score = serializers.FloatField(allow_null=True, help_text="0 to 100.")
    score_parts = ScorePartSerializer(many=True)


class RouteMetricSerializer(serializers.Serializer):
    value = serializers.FloatField(allow_null=True)
    rating = serializers.CharField(allow_null=True)
    samples = serializers.IntegerField()


class RouteRowSerializer(serializers.Serializer):
    route = serializers.CharField()
    pageviews = serializers.FloatField()
    samples = serializers.IntegerField()
    metrics = serializers.DictField(child=RouteMetricSerializer())
    too_few_samples = serializers.BooleanField()
    worst = serializers.FloatField()


class RoutesSerializer(AnswerSerializer):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = RouteRowSerializer(many=True)


class SeriesPointSerializer(serializers.Serializer):
    bucket_start = serializers.DateTimeField()
    value = serializers.FloatField(allow_null=True)
    samples = serializers.IntegerField()


class ReleaseMarkerSerializer(serializers.Serializer):
    release = serializers.CharField()
    first_seen = serializers.DateTimeField()


class SeriesSerializer(AnswerSerializer):
    name = serializers.CharField()
    resolution = serializers.IntegerField()
    good_threshold = serializers.FloatField()
    poor_threshold = serializers.FloatField()
    points = SeriesPointSerializer(many=True)
    releases = ReleaseMarkerSerializer(many=True)


class HistogramBinSerializer(serializers.Serializer):
    low = serializers.FloatField()
    high = serializers.FloatField()
    weight = serializers.FloatField()
    rating = serializers.CharField()


class HistogramSerializer(AnswerSerializer):
    name = serializers.CharField()
    bins = HistogramBinSerializer(many=True)


class BreakdownRowSerializer(serializers.Serializer):
    value = serializers.CharField()
    samples = serializers.IntegerField()
    weight = serializers.FloatField()
    percentile_value = serializers.FloatField(allow_null=True)
    rating = serializers.CharField(allow_null=True)


class BreakdownSerializer(AnswerSerializer):
    name = serializers.CharField()
    dimension = serializers.CharField()
    rows = BreakdownRowSerializer(many=True)


class AttributionPhaseSerializer(serializers.Serializer):
    phase = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]  # see CompareSideSerializer.label
    mean = serializers.FloatField(allow_null=True, help_text="Weighted mean, ms (CLS: unitless).")


class AttributionRowSerializer(serializers.Serializer):
    kind = serializers.CharField()
    kind_label = serializers.CharField()
    key = serializers.CharField(help_text='The element, URL, target or script; "" for the page load as a whole.')
    samples = serializers.IntegerField()
    weight = serializers.FloatField()
    impact = serializers.FloatField(help_text="Page views × mean excess over the good threshold: the ranking.")
    mean_value = serializers.FloatField(allow_null=True)
    phases = AttributionPhaseSerializer(many=True)


class AttributionSerializer(AnswerSerializer):
    name = serializers.CharField()
    note = serializers.CharField()
    rows = AttributionRowSerializer(many=True)


class CompareSideSerializer(serializers.Serializer):
    # The metaclass moves declared fields off the class, so "label" does not
    # shadow Field.label at run time; only the type checker sees a clash.
    label = serializers.CharField()  # type: ignore[assignment]
    value = serializers.FloatField(allow_null=True)
    low = serializers.FloatField(allow_null=True)
    high = serializers.FloatField(allow_null=True)
    samples = serializers.IntegerField()


class CompareRowSerializer(serializers.Serializer):
    name = serializers.CharField()
    route = serializers.CharField(allow_null=True)
    a = CompareSideSerializer()
    b = CompareSideSerializer()
    change = serializers.FloatField(allow_null=True)
    beyond_noise = serializers.BooleanField()


class CompareSerializer(AnswerSerializer):
    mode = serializers.CharField()
    a_label = serializers.CharField()
    b_label = serializers.CharField()
    a_range = TimeRangeSerializer()
    b_range = TimeRangeSerializer()
    method = serializers.CharField(help_text="How 'beyond noise' is decided.")
    rows = CompareRowSerializer(many=True)
