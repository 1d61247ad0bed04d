import hashlib
from dataclasses import replace
from datetime import timedelta
from html import escape
from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Exists, OuterRef
from django.http import Http404, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.templatetags.static import static
from django.urls import NoReverseMatch, reverse
from django.utils.cache import get_conditional_response, patch_cache_control, patch_vary_headers
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.middleware import HtmxDetails

from apps.core.permissions import StaffRequest, staff_required
from apps.core.timeranges import TimeRange
from apps.vitals import services
from apps.vitals.attribution import SPECS
from apps.vitals.beacon import THRESHOLDS
from apps.vitals.collect import SITE_CACHE_SECONDS
from apps.vitals.filters import DIMENSION_LABELS, FILTER_DIMENSIONS, DashboardQuery, DashboardQueryForm
from apps.vitals.forms import CompareForm, SiteForm
from apps.vitals.models import Rollup, Site
from apps.vitals.selectors import (
    ATTRIBUTION_FILTERS_NOTE,
    COMPARE_METHOD,
    METRIC_ORDER,
    MIN_ROUTE_SAMPLES,
    ROUTE_SORTS,
    SCORE_WEIGHTS,
    UNITS,
    AttributionRow,
    HistogramBin,
    RouteRow,
    SeriesPoint,
    attribution_top,
    beacons_last_minute,
    grouped_rollups,
    metric_breakdown,
    metric_histogram,
    metric_series,
    route_table,
    sample_rate_attribute,
    site_get,
    site_list,
    vitals_compare,
    vitals_summary,
)
from apps.vitals.templatetags.vitals_format import count, rating_label, rating_symbol, vital_value

SITES_PER_PAGE = 50


class DashboardRequest(StaffRequest):
    """A staff request as django-htmx's middleware leaves it."""

    htmx: HtmxDetails


WEB_VITALS_SCRIPT = "vendor/web-vitals/web-vitals-6.2.3.attribution.iife.js"
RUM_SCRIPT = "perfhub/rum.js"


def _may_change_sites(request: StaffRequest) -> bool:
    # Staff read every page; changing what browsers may send is for administrators.
    return request.user.is_superuser


@staff_required
@require_http_methods(["GET", "POST"])
def sites(request: StaffRequest) -> HttpResponse:
    may_change = _may_change_sites(request)
    form = SiteForm(request.POST if request.method == "POST" else None)
    status = 200
    if request.method == "POST":
        if not may_change:
            raise PermissionDenied("Only administrators can create sites.")
        if form.is_valid():
            data = form.cleaned_data
            try:
                site = services.site_create(
                    name=data["name"],
                    allowed_origins=data["allowed_origins"],
                    sample_rate=data["sample_rate"],
                    retention_days=data["retention_days"],
                    kept_query_params=data["kept_query_params"],
                    route_rules=data["route_rules"],
                )
            except (ValidationError, ValueError) as exc:
                form.add_error(None, _messages_of(exc))
            else:
                messages.success(request, f"Site “{site.name}” created. Paste its snippet into your pages.")
                # Post/Redirect/Get: a reload must not post the form again.
                return redirect("vitals:site", name=site.name)
        status = 400
    page = Paginator(site_list(), SITES_PER_PAGE).get_page(request.GET.get("page"))
    context = {"form": form if may_change else None, "page": page}
    return render(request, "vitals/sites.html", context, status=status)


@staff_required
@require_http_methods(["GET", "POST"])
def site_detail(request: StaffRequest, name: str) -> HttpResponse:
    site = get_object_or_404(site_get(name=name))
    may_change = _may_change_sites(request)
    form = SiteForm(request.POST if request.method == "POST" else None, site=site)
    status = 200
    if request.method == "POST":
        if not may_change:
            raise PermissionDenied("Only administrators can change sites.")
        if form.is_valid():
            data = form.cleaned_data
            try:
                services.site_update(
                    site=site,
                    name=data["name"],
                    allowed_origins=data.get("allowed_origins", site.allowed_origins),
                    sample_rate=data["sample_rate"],
                    retention_days=data["retention_days"],
                    kept_query_params=data["kept_query_params"],
                    route_rules=data["route_rules"],
                )
            except (ValidationError, ValueError) as exc:
                form.add_error(None, _messages_of(exc))
                # The page shows what is stored, not the rejected input.
                site.refresh_from_db()
            else:
                messages.success(
                    request,
                    f"Site “{site.name}” saved. The beacon endpoint applies it within {SITE_CACHE_SECONDS} seconds.",
                )
                return redirect("vitals:site", name=site.name)
        status = 400
    context = {
        "site": site,
        "rules": list(site.route_rules.all()),
        "form": form if may_change else None,
        "snippet": rum_snippet_html(request, site),
        "site_cache_seconds": SITE_CACHE_SECONDS,
    }
    return render(request, "vitals/site_detail.html", context, status=status)


@staff_required
@require_POST
def site_rotate_key(request: StaffRequest, name: str) -> HttpResponse:
    if not _may_change_sites(request):
        raise PermissionDenied("Only administrators can rotate keys.")
    site = get_object_or_404(Site, name=name)
    services.site_rotate_key(site=site)
    if site.is_builtin:
        messages.success(request, "New key for the built-in site. PerfHub's own pages carry it from now on.")
    else:
        messages.success(
            request,
            f"New key for “{site.name}”. Pages with the old key stop reporting within {SITE_CACHE_SECONDS} "
            "seconds: paste the new snippet into them.",
        )
    return redirect("vitals:site", name=site.name)


def rum_snippet_html(request: StaffRequest, site: Site) -> str:
    """The two script tags a site's pages carry, with absolute URLs of the
    hashed static files: they are served with a one-year cache, and a new
    release changes their names."""
    web_vitals = request.build_absolute_uri(static(WEB_VITALS_SCRIPT))
    rum = request.build_absolute_uri(static(RUM_SCRIPT))
    return (
        f'<script src="{escape(web_vitals)}" defer></script>\n'
        f'<script src="{escape(rum)}" data-perfhub-key="{escape(site.public_key)}" '
        f'data-perfhub-sample-rate="{sample_rate_attribute(site.sample_rate)}" defer></script>'
    )


def _messages_of(exc: ValidationError | ValueError) -> list[str]:
    return exc.messages if isinstance(exc, ValidationError) else [str(exc)]


# ---------------------------------------------------------------------------
# Web Vitals dashboards. Every figure comes from the rollup selectors; the
# views only parse the question, pick the fragment and lay numbers out.
# ---------------------------------------------------------------------------

METRIC_TITLES = {
    "LCP": "Largest Contentful Paint",
    "INP": "Interaction to Next Paint",
    "CLS": "Cumulative Layout Shift",
    "FCP": "First Contentful Paint",
    "TTFB": "Time to First Byte",
}
ROUTES_PER_PAGE = 25
COMPARE_ROUTE_ROWS_PER_PAGE = 50
# The fragments a dashboard refreshes, by the id of the element htmx swaps.
OVERVIEW_FRAGMENTS = {"vitals-cards": "cards", "routes": "routes"}
# Sparklines and the histogram are drawn in these SVG user units; the
# stylesheet scales them to the card.
SPARK_WIDTH, SPARK_HEIGHT = 100.0, 30.0
HISTOGRAM_WIDTH, HISTOGRAM_HEIGHT = 400.0, 120.0


# The API's export (apps.vitals.urls) takes the dashboard's own parameters;
# these are the routes table's, under the API's names.
EXPORT_PARAM_NAMES = {"q": "search", "dir": "order", "sort": "sort"}


def _export_links(
    request: DashboardRequest, site: Site, *, kind: str, formats: tuple[str, ...], name: str | None = None
) -> list[tuple[str, str]]:
    """(format, URL) of the API's export of what the page shows; none while
    the API has no export endpoint (the link would be a 404)."""
    try:
        url = reverse("api-site-export", args=[site.name])
    except NoReverseMatch:
        return []
    params = QueryDict(mutable=True)
    for key, values in request.GET.lists():
        if key in DashboardQueryForm.base_fields:
            params.setlist(key, values)
        elif kind == "routes" and key in EXPORT_PARAM_NAMES:
            params.setlist(EXPORT_PARAM_NAMES[key], values)
    params["kind"] = kind
    if name:
        params["name"] = name
    links = []
    for fmt in formats:
        params["format"] = fmt
        links.append((fmt.upper(), f"{url}?{params.urlencode()}"))
    return links


def _default_site() -> Site | None:
    """The first site (by name) that has rollups, else the built-in one."""
    with_data = Site.objects.filter(Exists(Rollup.objects.filter(site=OuterRef("pk")))).order_by("name").first()
    return with_data or Site.objects.filter(is_builtin=True).first() or Site.objects.order_by("name").first()


@staff_required
@require_GET
def overview(request: StaffRequest) -> HttpResponse:
    """The site chooser's target: the overview of ``?site=`` (or of the
    default site), with the other parameters kept."""
    params = request.GET.copy()
    name = params.pop("site", [""])[-1]
    site = get_object_or_404(Site, name=name) if name else _default_site()
    if site is None:
        messages.info(request, "No site yet: add one, paste its snippet into your pages, and its Web Vitals show here.")
        return redirect("vitals:sites")
    url = reverse("vitals:dashboard", args=[site.name])
    return redirect(f"{url}?{params.urlencode()}" if params else url)


def _query_form(request: DashboardRequest) -> DashboardQueryForm:
    """The filter bar bound to the request, with the defaults filled in so
    that the controls show them (the form reads an absent percentile or
    range as the default one: the question is the same)."""
    data = request.GET.copy()
    if not data.get("p"):
        data["p"] = str(DashboardQueryForm.base_fields["p"].initial)
    if not data.get("range"):
        data["range"] = (
            "custom" if data.get("start") and data.get("end") else DashboardQueryForm.base_fields["range"].initial
        )
    form = DashboardQueryForm(data)
    # The browser's own date-time picker; DateTimeField reads its ISO format.
    for name in ("start", "end"):
        form.fields[name].widget = forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")
    return form


def _field_errors(*bound_forms: Any) -> list[tuple[str, str, list[str]]]:
    """(parameter, label, messages) per invalid field, for the 400 page."""
    errors = []
    for form in bound_forms:
        if not form.is_bound or form.is_valid():
            continue
        for name, messages_ in form.errors.items():
            field = form.fields.get(name)
            label = str(field.label or name.replace("_", " ").capitalize()) if field else "Query"
            errors.append((name, label, list(messages_)))
    return errors


def _bad_query(request: DashboardRequest, template: str, context: dict[str, Any], *others: Any) -> HttpResponse:
    context = {**context, "errors": _field_errors(context["form"], *others)}
    if request.htmx:
        return render(request, "vitals/partials/_query_errors.html", context, status=400)
    return render(request, template, context, status=400)


def _live(request: DashboardRequest, response: HttpResponse) -> HttpResponse:
    """A refreshed fragment, answered 304 when the poller already has it:
    its ETag is a digest of the rendered bytes, so a fragment whose figures
    did not change is not sent or swapped again."""
    etag = '"' + hashlib.blake2b(response.content, digest_size=16).hexdigest() + '"'
    response["ETag"] = etag
    # Every poll asks the server; the answer depends on htmx's headers.
    patch_cache_control(response, private=True, no_cache=True)
    patch_vary_headers(response, ["HX-Request", "HX-Target"])
    return get_conditional_response(request, etag=etag, response=response) or response


def _sparkline(points: list[tuple[Any, float | None]]) -> list[str]:
    """SVG polyline point lists for a sparkline, one per unbroken run of
    values: a bucket without data is a gap, not a zero."""
    values = [v for _, v in points if v is not None]
    if not values or len(points) < 2:
        return []
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = SPARK_WIDTH / (len(points) - 1)
    runs: list[list[str]] = [[]]
    for i, (_, value) in enumerate(points):
        if value is None:
            if runs[-1]:
                runs.append([])
            continue
        y = SPARK_HEIGHT - 2 - (value - low) / span * (SPARK_HEIGHT - 4)
        runs[-1].append(f"{i * step:.2f},{y:.2f}")
    # A lone point gets a tiny segment so it is drawn at all.
    return [" ".join(run if len(run) > 1 else [run[0], run[0]]) for run in runs if run]


def _histogram_bars(bins: list[HistogramBin]) -> list[dict[str, Any]]:
    if not bins:
        return []
    top = max(b.weight for b in bins) or 1.0
    width = HISTOGRAM_WIDTH / len(bins)
    bars = []
    for i, b in enumerate(bins):
        height = b.weight / top * (HISTOGRAM_HEIGHT - 2)
        bars.append(
            {
                "bin": b,
                "x": f"{i * width:.2f}",
                "width": f"{max(width - 1, 0.5):.2f}",
                "y": f"{HISTOGRAM_HEIGHT - height:.2f}",
                "height": f"{height:.2f}",
            }
        )
    return bars


def _dashboard_site(name: str) -> Site:
    return get_object_or_404(Site, name=name)


def _route_sort(request: DashboardRequest) -> tuple[str, bool]:
    sort = request.GET.get("sort", "worst")
    if sort not in ROUTE_SORTS:
        sort = "worst"
    # Worst first is the lowest score first; the metrics' worst first is the highest value first.
    default_desc = sort in METRIC_ORDER or sort == "pageviews"
    direction = request.GET.get("dir")
    return sort, (direction == "desc") if direction in ("asc", "desc") else default_desc


def _route_columns(sort: str, descending: bool) -> list[dict[str, Any]]:
    """The routes table's headers: each one a link that sorts by it, the
    second click reversing the order."""
    columns = [("route", "Route", False), ("pageviews", "Page views", True)]
    columns += [(name, name, True) for name in METRIC_ORDER]
    columns += [("worst", "Worst score", True)]
    headers = []
    for key, label, numeric in columns:
        current = key == sort
        first_desc = key in METRIC_ORDER or key == "pageviews"
        next_desc = (not descending) if current else first_desc
        headers.append(
            {
                "key": key,
                "label": label,
                "numeric": numeric,
                "current": current,
                "aria_sort": ("descending" if descending else "ascending") if current else None,
                "dir": "desc" if next_desc else "asc",
            }
        )
    return headers


# A routes table cell: the value and its rating as a symbol and words, never
# colour alone.
_ROUTE_CELL = (
    '<td class="num" data-metric="{}">{} <span class="rating-mark rating-mark-{}" title="{}">'
    '<span aria-hidden="true">{}</span><span class="visually-hidden">{}</span></span></td>'
)
_ROUTE_CELL_EMPTY = '<td class="num" data-metric="{}"><span class="muted">–</span></td>'


def _route_rows(request: DashboardRequest, site: Site, rows: list[RouteRow]) -> list[dict[str, Any]]:
    """A page of the routes table as it is shown: each row's link to the
    route's own overview and its metric cells as HTML, made here with
    format_html rather than in the template cell by cell, which cost a
    third of the overview's rendering (half a dozen variable lookups, tests
    and filter calls per cell, a {% querystring %} per row)."""
    params = request.GET.copy()
    for name in ("route", "q", "sort", "dir", "page"):
        params.pop(name, None)
    base = reverse("vitals:dashboard", args=[site.name])
    shown = []
    for row in rows:
        params["route"] = row.route
        cells = []
        for name, metric in row.metrics.items():
            if metric.value is None:
                cells.append(format_html(_ROUTE_CELL_EMPTY, name))
                continue
            label = rating_label(metric.rating)
            cells.append(
                format_html(
                    _ROUTE_CELL,
                    name,
                    vital_value(metric.value, name),
                    metric.rating,
                    label,
                    rating_symbol(metric.rating),
                    label,
                )
            )
        shown.append(
            {
                "route": row.route,
                "url": f"{base}?{params.urlencode()}",
                "too_few_samples": row.too_few_samples,
                "pageviews": count(row.pageviews),
                "cells": format_html_join("", "{}", ((cell,) for cell in cells)),
                "worst": f"{row.worst * 100:.0f}",
            }
        )
    return shown


def _routes_context(request: DashboardRequest, query: DashboardQuery) -> dict[str, Any]:
    sort, descending = _route_sort(request)
    search = request.GET.get("q", "")[:200]
    rows = route_table(query, search=search, sort=sort, descending=descending)
    page = Paginator(rows, ROUTES_PER_PAGE).get_page(request.GET.get("page"))
    return {
        "routes_page": page,
        "route_rows": _route_rows(request, query.site, list(page.object_list)),
        "route_columns": _route_columns(sort, descending),
        "search": search,
        "sort": sort,
        "descending": descending,
        "min_route_samples": MIN_ROUTE_SAMPLES,
        "routes_export": _export_links(request, query.site, kind="routes", formats=("csv", "json")),
    }


def _cards_context(query: DashboardQuery) -> dict[str, Any]:
    summary = vitals_summary(query)
    cards = [
        {"card": card, "title": METRIC_TITLES[card.name], "sparkline": _sparkline(card.sparkline)}
        for card in summary.cards
    ]
    return {"summary": summary, "cards": cards, "beacons_last_minute": beacons_last_minute(query.site)}


def _base_context(site: Site, form: DashboardQueryForm, query: DashboardQuery | None) -> dict[str, Any]:
    return {
        "site": site,
        "form": form,
        "query": query,
        "sites": Site.objects.order_by("name").only("name"),
        "metric_names": METRIC_ORDER,
    }


@staff_required
@require_GET
def dashboard(request: DashboardRequest, site: str) -> HttpResponse:
    """A site's overview (or one route's, with ``?route=``): a card per
    metric, the assessment, the score and the routes table."""
    chosen = _dashboard_site(site)
    form = _query_form(request)
    context = _base_context(chosen, form, None)
    if not form.is_valid():
        return _bad_query(request, "vitals/dashboard.html", context)
    query = form.query(chosen)
    context["query"] = query
    fragment = OVERVIEW_FRAGMENTS.get(request.htmx.target or "") if request.htmx else None
    if fragment == "cards":
        return _live(request, render(request, "vitals/dashboard.html#cards", {**context, **_cards_context(query)}))
    if fragment == "routes":
        return _live(
            request, render(request, "vitals/dashboard.html#routes", {**context, **_routes_context(request, query)})
        )
    context.update(_cards_context(query))
    if query.route is None:
        context.update(_routes_context(request, query))
    context.update(
        {
            "score_weights": [
                {"name": name, "weight": weight, "good": THRESHOLDS[name][0], "poor": THRESHOLDS[name][1]}
                for name, weight in SCORE_WEIGHTS.items()
            ],
        }
    )
    response = render(request, "vitals/dashboard.html", context)
    # The same URL answers the page and, to htmx, its fragments.
    patch_vary_headers(response, ["HX-Request", "HX-Target"])
    return response


@staff_required
@require_GET
def metric_detail(request: DashboardRequest, site: str, name: str) -> HttpResponse:
    """One metric over time (uPlot, drawn by live.js from a JSON block), its
    histogram and its breakdowns, for the site or one route."""
    if name not in METRIC_ORDER:
        raise Http404("No such metric.")
    chosen = _dashboard_site(site)
    form = _query_form(request)
    context = {**_base_context(chosen, form, None), "name": name, "title": METRIC_TITLES[name], "unit": UNITS[name]}
    if not form.is_valid():
        return _bad_query(request, "vitals/metric.html", context)
    query = form.query(chosen)
    series = metric_series(query, name=name)
    bins = metric_histogram(query, name=name)
    breakdowns = [
        {
            "dimension": dimension,
            "label": DIMENSION_LABELS[dimension],
            "rows": [
                # A value narrows the page to it; "" (not known) cannot be asked for.
                {"row": row, "href": _with_param(request, dimension, row.value) if row.value else None}
                for row in metric_breakdown(query, name=name, dimension=dimension)
            ],
        }
        for dimension in FILTER_DIMENSIONS
    ]
    context.update(
        {
            "query": query,
            "series": series,
            "chart": _chart_data(series.points, name=name, percentile=query.percentile, series=series),
            "histogram": _histogram_bars(bins),
            "histogram_low": bins[0].low if bins else None,
            "histogram_high": bins[-1].high if bins else None,
            "histogram_size": (HISTOGRAM_WIDTH, HISTOGRAM_HEIGHT),
            "breakdowns": breakdowns,
            "good": THRESHOLDS[name][0],
            "poor": THRESHOLDS[name][1],
            "series_export": _export_links(request, chosen, kind="series", name=name, formats=("csv", "json")),
            "raw_export": _export_links(request, chosen, kind="raw", name=name, formats=("csv", "ndjson")),
        }
    )
    return render(request, "vitals/metric.html", context)


def _with_param(request: DashboardRequest, name: str, value: str) -> str:
    params = request.GET.copy()
    params[name] = value
    return "?" + params.urlencode()


def _chart_data(points: list[SeriesPoint], *, name: str, percentile: int, series: Any) -> dict[str, Any]:
    """What live.js hands to uPlot: epoch seconds, values (null for gaps),
    the threshold lines and the release markers."""
    return {
        "name": name,
        "unit": UNITS[name],
        "percentile": percentile,
        "x": [int(p.bucket_start.timestamp()) for p in points],
        "y": [p.value for p in points],
        "samples": [p.samples for p in points],
        "good": series.good_threshold,
        "poor": series.poor_threshold,
        "releases": [[int(m.first_seen.timestamp()), m.release] for m in series.releases],
    }


def _releases_seen(query: DashboardQuery) -> list[str]:
    """Releases with data in the query's range and filters (its own release
    filter aside), newest name first. One query."""
    unfiltered = replace(query, filters=tuple((d, v) for d, v in query.filters if d != "release"))
    seen = {release for (_, release) in grouped_rollups(unfiltered, by=("release",)) if release}
    return sorted(seen, reverse=True)


@staff_required
@require_GET
def compare(request: DashboardRequest, site: str) -> HttpResponse:
    """Two releases (same range and filters) or two periods (the chosen
    range against the one before it, or a week earlier), per metric and route."""
    chosen = _dashboard_site(site)
    form = _query_form(request)
    compare_form = CompareForm(request.GET or None)
    context = {
        **_base_context(chosen, form, None),
        "compare_form": compare_form,
        "method": COMPARE_METHOD,
        # Each of the page's two forms carries the other's choices along.
        "compare_params": [(k, v) for k, v in request.GET.items() if k in CompareForm.base_fields],
        "dashboard_params": [(k, v) for k, v in request.GET.items() if k not in CompareForm.base_fields],
    }
    if not form.is_valid() or (compare_form.is_bound and not compare_form.is_valid()):
        return _bad_query(request, "vitals/compare.html", context, compare_form)
    query = form.query(chosen)
    choice = compare_form.cleaned_data if compare_form.is_bound else {}
    mode = choice.get("mode") or "periods"
    releases = _releases_seen(query)
    context.update({"query": query, "mode": mode, "releases": releases})
    if mode == "releases":
        a_release = choice.get("a") or (releases[1] if len(releases) > 1 else "")
        b_release = choice.get("b") or (releases[0] if releases else "")
        if not a_release or not b_release:
            context["notice"] = "Fewer than two releases have data in this range: choose a longer range."
            return render(request, "vitals/compare.html", context)
        a_query, b_query = query.with_filter("release", a_release), query.with_filter("release", b_release)
        a_label, b_label = a_release, b_release
        context.update({"a_release": a_release, "b_release": b_release})
    else:
        baseline = choice.get("baseline") or "previous"
        time_range = query.time_range
        if baseline == "week":
            week = timedelta(days=7)
            before = TimeRange(start=time_range.start - week, end=time_range.end - week)
            a_label = "Same period a week earlier"
        else:
            before = time_range.previous()
            a_label = "Previous period"
        a_query, b_query = query.with_range(before), query
        b_label = time_range.label
        context.update({"baseline": baseline, "a_range": before, "b_range": time_range})
    rows = vitals_compare(a_query, b_query, a_label=a_label, b_label=b_label, by_route=query.route is None)
    overall = [row for row in rows if row.route is None]
    # Per route, the rows both sides have enough samples for; changes
    # beyond noise first, then the busiest routes.
    per_route = [
        row for row in rows if row.route is not None and min(row.a.samples, row.b.samples) >= MIN_ROUTE_SAMPLES
    ]
    per_route.sort(key=lambda row: (not row.beyond_noise, -(row.a.samples + row.b.samples), row.route or ""))
    page = Paginator(per_route, COMPARE_ROUTE_ROWS_PER_PAGE).get_page(request.GET.get("page"))
    context.update(
        {
            "rows": overall + list(page.object_list),
            "route_rows_page": page,
            "route_rows_left_out": sum(1 for row in rows if row.route is not None) - len(per_route),
            "min_route_samples": MIN_ROUTE_SAMPLES,
            "a_label": a_label,
            "b_label": b_label,
        }
    )
    return render(request, "vitals/compare.html", context)


ATTRIBUTION_LIMIT = 10


def _attribution_tables(name: str, rows: list[AttributionRow]) -> list[dict[str, Any]]:
    """One table per kind of culprit, with each row's phases as a stacked
    bar (their share of the row's summed phase means) and as numbers."""
    tables: dict[str, dict[str, Any]] = {}
    for row in rows:
        table = tables.setdefault(
            row.kind,
            {
                "kind": row.kind,
                "label": row.kind_label,
                "phases": [p.label for p in row.phases],
                "legend": [(i, p.label) for i, p in enumerate(row.phases) if p.phase != "longestScriptDuration"],
                "rows": [],
            },
        )
        # "Longest script" overlaps processing; it is shown, not stacked.
        stacked = [p for p in row.phases if p.phase != "longestScriptDuration" and p.mean]
        total = sum(p.mean or 0.0 for p in stacked)
        segments, x = [], 0.0
        for p in stacked:
            width = (p.mean or 0.0) / total * 100 if total > 0 else 0.0
            segments.append({"phase": p, "index": [q.phase for q in row.phases].index(p.phase), "x": x, "width": width})
            x += width
        table["rows"].append({"row": row, "segments": segments})
    return list(tables.values())


@staff_required
@require_GET
def attribution(request: DashboardRequest, site: str) -> HttpResponse:
    """What to blame, per metric: the culprits attribution names, ranked by
    impact (page views × excess over "good"), with their phase breakdown."""
    chosen = _dashboard_site(site)
    form = _query_form(request)
    context = {**_base_context(chosen, form, None), "filters_note": ATTRIBUTION_FILTERS_NOTE}
    if not form.is_valid():
        return _bad_query(request, "vitals/attribution.html", context)
    query = form.query(chosen)
    sections = []
    for name in METRIC_ORDER:
        if name not in SPECS:
            continue
        rows = attribution_top(query, name=name, limit=ATTRIBUTION_LIMIT)
        sections.append({"name": name, "title": METRIC_TITLES[name], "tables": _attribution_tables(name, rows)})
    context.update({"query": query, "sections": sections, "limit": ATTRIBUTION_LIMIT})
    return render(request, "vitals/attribution.html", context)
