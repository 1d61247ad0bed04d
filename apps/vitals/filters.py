"""What a dashboard question is: a site, a time range, a percentile, an
optional route and filters on the rollup dimensions. One form parses it from
query parameters for the HTML pages and the API alike, so both accept the
same parameters and answer bad ones with the same messages."""

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from apps.core.timeranges import CUSTOM, DEFAULT_PRESET, PRESETS, TimeRange, time_range_custom, time_range_preset
from apps.vitals.beacon import CONNECTIONS, NAVIGATION_TYPES
from apps.vitals.models import Site
from apps.vitals.normalize import DESKTOP, MOBILE, TABLET

PERCENTILES = (50, 75, 90, 95, 99)
DEFAULT_PERCENTILE = 75
# The rollup dimensions a page can filter and break down by (the route is
# chosen separately: it is a page of its own).
FILTER_DIMENSIONS = ("device_class", "browser", "country", "connection", "navigation_type", "release")
DIMENSION_LABELS = {
    "device_class": "Device",
    "browser": "Browser",
    "country": "Country",
    "connection": "Connection",
    "navigation_type": "Navigation type",
    "release": "Release",
    "route": "Route",
}


@dataclass(frozen=True)
class DashboardQuery:
    site: Site
    time_range: TimeRange
    percentile: int = DEFAULT_PERCENTILE
    route: str | None = None
    # (dimension, value) pairs, sorted, so equal queries compare and hash equal.
    filters: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @property
    def quantile(self) -> float:
        return self.percentile / 100

    def filter_dict(self) -> dict[str, str]:
        return dict(self.filters)

    def with_range(self, time_range: TimeRange) -> "DashboardQuery":
        return replace(self, time_range=time_range)

    def with_route(self, route: str | None) -> "DashboardQuery":
        return replace(self, route=route)

    def with_filter(self, dimension: str, value: str) -> "DashboardQuery":
        filters = {**self.filter_dict(), dimension: value}
        return replace(self, filters=tuple(sorted(filters.items())))


def _choices(values: object) -> list[tuple[str, str]]:
    return [("", "All")] + [(v, v) for v in sorted(values)]  # type: ignore[call-overload]


class DashboardQueryForm(forms.Form):
    range = forms.ChoiceField(
        choices=[*((key, label) for key, (label, _) in PRESETS.items()), (CUSTOM, "Custom")],
        required=False,
        initial=DEFAULT_PRESET,
    )
    start = forms.DateTimeField(required=False, help_text="UTC; for a custom range.")
    end = forms.DateTimeField(required=False, help_text="UTC; for a custom range.")
    p = forms.TypedChoiceField(
        label="Percentile",
        choices=[(str(p), f"p{p}") for p in PERCENTILES],
        coerce=int,
        required=False,
        initial=DEFAULT_PERCENTILE,
        # An absent percentile is the default one (see query()).
        empty_value=None,
    )
    route = forms.CharField(required=False, max_length=200)
    device_class = forms.ChoiceField(label="Device", choices=_choices({DESKTOP, MOBILE, TABLET}), required=False)
    browser = forms.CharField(required=False, max_length=40)
    country = forms.RegexField(
        regex=r"^[A-Z]{2}$",
        required=False,
        error_messages={"invalid": "Use a two-letter country code in capitals, e.g. DE."},
    )
    connection = forms.ChoiceField(choices=_choices(CONNECTIONS), required=False)
    navigation_type = forms.ChoiceField(label="Navigation type", choices=_choices(NAVIGATION_TYPES), required=False)
    release = forms.CharField(required=False, max_length=100)

    def __init__(self, data: Any = None, *, now: datetime | None = None, **kwargs: Any) -> None:
        super().__init__(data, **kwargs)
        self.now = now

    def clean_start(self) -> datetime | None:
        return _as_utc(self.cleaned_data.get("start"))

    def clean_end(self) -> datetime | None:
        return _as_utc(self.cleaned_data.get("end"))

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        preset = data.get("range") or DEFAULT_PRESET
        if preset == CUSTOM or (data.get("start") and data.get("end") and not self.data.get("range")):
            start, end = data.get("start"), data.get("end")
            if start is None or end is None:
                raise ValidationError({"start": "A custom range needs both start and end."})
            try:
                data["time_range"] = time_range_custom(start, end)
            except ValidationError as exc:
                raise ValidationError({"end": exc.messages}) from exc
        elif "range" not in self.errors:
            data["time_range"] = time_range_preset(preset, now=self.now)
        return data

    def query(self, site: Site) -> DashboardQuery:
        """The question asked; call after ``is_valid()`` returned True."""
        data = self.cleaned_data
        filters = tuple(sorted((d, data[d]) for d in FILTER_DIMENSIONS if data.get(d)))
        return DashboardQuery(
            site=site,
            time_range=data["time_range"],
            percentile=data.get("p") or DEFAULT_PERCENTILE,
            route=data.get("route") or None,
            filters=filters,
        )


def _as_utc(moment: datetime | None) -> datetime | None:
    # The form reads naive times in the current time zone, which is UTC for
    # PerfHub; an explicit offset is kept and converted.
    return moment.astimezone(UTC) if moment is not None else None


def dashboard_query_parse(params: Any, *, site: Site, now: datetime | None = None) -> DashboardQuery:
    """The query described by ``params`` (a QueryDict); ValidationError with a
    message per field otherwise."""
    form = DashboardQueryForm(params, now=now)
    if not form.is_valid():
        raise ValidationError({name: errors for name, errors in form.errors.items()})
    return form.query(site)
