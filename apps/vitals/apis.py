"""The Web Vitals API: the dashboards' answers as JSON, and their exports.

Every view parses the dashboard question with the pages' own form
(apps.vitals.filters), asks one selector, and serializes its dataclasses.
Bad parameters answer 400 with the messages per field, an unknown site 404.
Permission: a staff session or an API token (the project default,
IsStaffOrReadToken)."""

from collections.abc import Iterable
from typing import Any, TypeVar

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.paginator import EmptyPage, Paginator
from django.http import HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.generics import ListAPIView
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from apps.vitals import export
from apps.vitals.filters import DashboardQuery, dashboard_query_parse
from apps.vitals.models import Site
from apps.vitals.selectors import (
    ATTRIBUTION_FILTERS_NOTE,
    COMPARE_METHOD,
    attribution_top,
    metric_breakdown,
    metric_histogram,
    metric_series,
    route_table,
    site_list,
    vitals_compare,
    vitals_summary,
)
from apps.vitals.serializers import (
    DASHBOARD_PARAMETERS,
    AttributionParams,
    AttributionSerializer,
    BreakdownParams,
    BreakdownSerializer,
    CompareParams,
    CompareSerializer,
    ExportParams,
    HistogramSerializer,
    MetricParams,
    RoutesParams,
    RoutesSerializer,
    SeriesSerializer,
    SiteSerializer,
    SummarySerializer,
    answer,
)

P = TypeVar("P", bound=serializers.Serializer)
TAGS = ["Web Vitals"]
ERRORS = {
    400: OpenApiResponse(OpenApiTypes.OBJECT, description="A bad parameter: {field: [messages]}."),
    401: OpenApiResponse(description="No session or token."),
    403: OpenApiResponse(description="Neither staff nor a token."),
    404: OpenApiResponse(description="No site of that name."),
}


def site_for(name: str) -> Site:
    site = Site.objects.filter(name=name).first()
    if site is None:
        raise exceptions.NotFound(f"No site named {name!r}.")
    return site


def question(request: Request, site: Site) -> DashboardQuery:
    """The dashboard question; 400 naming every bad field."""
    try:
        return dashboard_query_parse(request.query_params, site=site)
    except DjangoValidationError as exc:
        raise exceptions.ValidationError(exc.message_dict) from None


def question_with(request: Request, site: Site, params: type[P]) -> tuple[DashboardQuery, P]:
    """The dashboard question and the endpoint's own parameters, validated;
    one 400 naming every bad field of both."""
    errors: dict[str, Any] = {}
    query = None
    try:
        query = dashboard_query_parse(request.query_params, site=site)
    except DjangoValidationError as exc:
        errors.update(exc.message_dict)
    parsed = params(data=request.query_params)
    if not parsed.is_valid():
        errors.update(parsed.errors)
    if errors or query is None:
        raise exceptions.ValidationError(errors)
    return query, parsed


class SiteListView(ListAPIView):
    """Every site, with links to its dashboards' endpoints."""

    serializer_class = SiteSerializer

    def get_queryset(self) -> Any:
        return site_list()

    @extend_schema(tags=TAGS, summary="Sites")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class SummaryView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="Overview: one card per metric, the Core Web Vitals assessment and the score",
        parameters=DASHBOARD_PARAMETERS,
        responses={200: SummarySerializer, **ERRORS},
    )
    def get(self, request: Request, site: str) -> Response:
        query = question(request, site_for(site))
        summary = vitals_summary(query)
        return Response(SummarySerializer(answer(query, **vars(summary))).data)


class RoutesView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="Routes table: the percentile of each metric per route, worst first, a page at a time",
        parameters=[*DASHBOARD_PARAMETERS, RoutesParams],
        responses={200: RoutesSerializer, **ERRORS},
    )
    def get(self, request: Request, site: str) -> Response:
        query, params = question_with(request, site_for(site), RoutesParams)
        data = params.validated_data
        rows = route_table(
            query,
            search=data["search"],
            sort=data["sort"],
            descending=data["descending"],
            min_samples=data["min_samples"],
        )
        try:
            page = Paginator(rows, data["page_size"]).page(data["page"])
        except EmptyPage:
            raise exceptions.ValidationError({"page": [f"There are only {len(rows)} routes."]}) from None
        url = request.build_absolute_uri()
        return Response(
            RoutesSerializer(
                answer(
                    query,
                    count=len(rows),
                    next=replace_query_param(url, "page", page.next_page_number()) if page.has_next() else None,
                    previous=(
                        replace_query_param(url, "page", page.previous_page_number()) if page.has_previous() else None
                    ),
                    results=page.object_list,
                )
            ).data
        )


class SeriesView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="A metric's percentile per bucket, with threshold lines and release markers",
        parameters=[*DASHBOARD_PARAMETERS, MetricParams],
        responses={200: SeriesSerializer, **ERRORS},
    )
    def get(self, request: Request, site: str) -> Response:
        query, params = question_with(request, site_for(site), MetricParams)
        series = metric_series(query, name=params.validated_data["name"])
        return Response(SeriesSerializer(answer(query, **vars(series))).data)


class HistogramView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="The distribution of a metric's values (log-scale bins, sample-rate weighted)",
        parameters=[*DASHBOARD_PARAMETERS, MetricParams],
        responses={200: HistogramSerializer, **ERRORS},
    )
    def get(self, request: Request, site: str) -> Response:
        query, params = question_with(request, site_for(site), MetricParams)
        name = params.validated_data["name"]
        bins = metric_histogram(query, name=name)
        return Response(HistogramSerializer(answer(query, name=name, bins=bins)).data)


class BreakdownView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="A metric's percentile per device class, browser, country, connection, navigation type, "
        "release or route",
        parameters=[*DASHBOARD_PARAMETERS, BreakdownParams],
        responses={200: BreakdownSerializer, **ERRORS},
    )
    def get(self, request: Request, site: str) -> Response:
        query, params = question_with(request, site_for(site), BreakdownParams)
        name, dimension = params.validated_data["name"], params.validated_data["dimension"]
        rows = metric_breakdown(query, name=name, dimension=dimension)
        return Response(BreakdownSerializer(answer(query, name=name, dimension=dimension, rows=rows)).data)


class AttributionView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="What to blame: the top LCP elements and resources, INP targets and scripts, CLS shift sources, "
        "FCP and TTFB phases (with Server-Timing for PerfHub's pages), ranked by impact",
        description=ATTRIBUTION_FILTERS_NOTE,
        parameters=[*DASHBOARD_PARAMETERS, AttributionParams],
        responses={200: AttributionSerializer, **ERRORS},
    )
    def get(self, request: Request, site: str) -> Response:
        query, params = question_with(request, site_for(site), AttributionParams)
        name = params.validated_data["name"]
        rows = attribution_top(query, name=name, limit=params.validated_data["limit"])
        return Response(AttributionSerializer(answer(query, name=name, note=ATTRIBUTION_FILTERS_NOTE, rows=rows)).data)


class CompareView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="Two releases or two periods side by side, per metric and route, with 95% intervals",
        description=COMPARE_METHOD,
        parameters=[*DASHBOARD_PARAMETERS, CompareParams],
        responses={200: CompareSerializer, **ERRORS},
    )
    def get(self, request: Request, site: str) -> Response:
        query, params = question_with(request, site_for(site), CompareParams)
        plan = params.plan(query)
        rows = vitals_compare(
            plan.a, plan.b, a_label=plan.a_label, b_label=plan.b_label, by_route=params.validated_data["by_route"]
        )
        return Response(
            CompareSerializer(
                answer(
                    query,
                    mode=params.validated_data["mode"],
                    a_label=plan.a_label,
                    b_label=plan.b_label,
                    a_range=plan.a.time_range,
                    b_range=plan.b.time_range,
                    method=COMPARE_METHOD,
                    rows=rows,
                )
            ).data
        )


class _AlwaysJson(DefaultContentNegotiation):
    """``format`` names the export's file format here, not a DRF renderer
    (DRF would answer 404 to ?format=csv); errors are always JSON."""

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = JSONRenderer()
        return renderer, renderer.media_type


class ExportView(APIView):
    content_negotiation_class = _AlwaysJson

    @extend_schema(
        tags=TAGS,
        summary="CSV, JSON or NDJSON of the routes table, a time series, or the raw rows of the range",
        description=(
            "Streamed. kind=raw returns at most `limit` rows ordered by (occurred_at, id); when more remain, the "
            'response has a `Link: <…&after=cursor>; rel="next"` header (and, in JSON, a trailing `next` field) '
            "to fetch the following page. CSV cells that a spreadsheet would run as a formula start with `'`; the "
            "attribution column is JSON."
        ),
        parameters=[*DASHBOARD_PARAMETERS, ExportParams],
        responses={
            (200, "text/csv"): OpenApiTypes.STR,
            (200, "application/json"): OpenApiTypes.OBJECT,
            (200, "application/x-ndjson"): OpenApiTypes.STR,
            **ERRORS,
        },
    )
    def get(self, request: Request, site: str) -> HttpResponseBase:
        query, params = question_with(request, site_for(site), ExportParams)
        data = params.validated_data
        if data["kind"] == "routes":
            rows = route_table(
                query,
                search=data["search"],
                sort=data["sort"],
                descending=data["descending"],
                min_samples=data["min_samples"],
            )
            return export.routes_response(query, rows, fmt=data["format"])
        if data["kind"] == "series":
            return export.series_response(query, metric_series(query, name=data["name"]), fmt=data["format"])
        return export.raw_response(
            request, query, name=data.get("name"), after=data.get("after"), limit=data["limit"], fmt=data["format"]
        )
