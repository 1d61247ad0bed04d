"""Exports for people who want their own analysis: the routes table, a time
series, or the raw metric rows, as CSV, JSON or NDJSON.

Responses are streamed, so a page of 100,000 raw rows never sits in memory:
rows are read with a server-side cursor (``iterator``) and written out as
they come. Raw rows go a page at a time in (occurred_at, id) order; the
position after the last row is an opaque cursor, sent in a ``Link`` header
(and at the end of a JSON body), that asks for the next page. Keyset rather
than OFFSET paging keeps every page as cheap as the first and returns every
row exactly once while new beacons arrive (they sort after the cursor, or
land in a later page).

This is the only view that reads raw Metric rows; every other answer comes
from rollups."""

import csv
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Q, QuerySet
from django.http import StreamingHttpResponse
from rest_framework.request import Request
from rest_framework.utils.urls import replace_query_param

from apps.vitals.filters import DashboardQuery
from apps.vitals.models import Metric, Rating
from apps.vitals.selectors import METRIC_ORDER, MetricSeries, RouteRow
from apps.vitals.serializers import cursor_encode
from apps.vitals.services import COLUMNS

CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "ndjson": "application/x-ndjson",
}
# Rows fetched per round trip from the server-side cursor.
CHUNK_SIZE = 2000
# Rows per chunk of the response body.
BATCH_ROWS = 500
# A spreadsheet runs a cell that starts with one of these as a formula
# (OWASP "CSV injection"); tab and carriage return hide such a start.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# A raw row as stored (services.COLUMNS), its id first; the site and the
# partition day are implied by the export's own question.
RAW_COLUMNS = ("id", *(c for c in COLUMNS if c not in ("site_id", "day")))
_RATINGS = {r.value: r.label for r in Rating}


class _Encoder(DjangoJSONEncoder):
    """Times to the microsecond, as stored and as in the CSV (Django's
    encoder cuts them to milliseconds, which would make two rows of one
    millisecond indistinguishable)."""

    def default(self, o: Any) -> Any:
        if isinstance(o, datetime):
            return o.isoformat()
        return super().default(o)


_encoder = _Encoder(separators=(",", ":"))


def csv_safe(cell: Any) -> Any:
    """Text that a spreadsheet would evaluate gets a leading quote; numbers
    stay numbers (a negative number is data, not a formula)."""
    if isinstance(cell, str) and cell.startswith(_FORMULA_STARTS):
        return "'" + cell
    return cell


def _csv_cell(value: Any) -> Any:
    # By exact type, most common first: this runs for every cell of up to
    # 100,000 rows.
    kind = type(value)
    if kind is str:
        return "'" + value if value.startswith(_FORMULA_STARTS) else value
    if kind is float or kind is int or kind is bool:
        return value
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict | list):
        return _encoder.encode(value)
    return csv_safe(str(value))


class _Echo:
    """A file-like object whose write returns what it was given, so that
    csv.writer produces one line at a time for a streaming response (the
    pattern of Django's "Streaming large CSV files" how-to)."""

    def write(self, value: str) -> str:
        return value


def _batched(lines: Iterable[str]) -> Iterator[str]:
    """Lines joined in groups of BATCH_ROWS: a WSGI server writes every
    chunk a response yields to the socket on its own, and 100,000 tiny
    writes would cost more than producing the rows."""
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= BATCH_ROWS:
            yield "".join(batch)
            batch = []
    if batch:
        yield "".join(batch)


def _csv_lines(columns: tuple[str, ...], rows: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(columns)
    for row in rows:
        yield writer.writerow([_csv_cell(row[c]) for c in columns])


def _json_chunks(
    header: Mapping[str, Any], rows: Iterable[Mapping[str, Any]], next_cursor: str | None
) -> Iterator[str]:
    """``{...header, "rows": [...], "next": cursor}`` written a row at a time."""
    yield _encoder.encode(dict(header))[:-1] + ',"rows":['  # the header without its closing brace
    first = True
    for row in rows:
        yield ("" if first else ",") + _encoder.encode(row)
        first = False
    yield '],"next":' + _encoder.encode(next_cursor) + "}\n"


def _ndjson_lines(rows: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    for row in rows:
        yield _encoder.encode(row) + "\n"


def _response(
    query: DashboardQuery,
    *,
    kind: str,
    fmt: str,
    columns: tuple[str, ...],
    rows: Iterable[Mapping[str, Any]],
    next_cursor: str | None = None,
    next_url: str | None = None,
    label: str = "",
) -> StreamingHttpResponse:
    if fmt == "csv":
        body: Iterator[str] = _csv_lines(columns, rows)
    elif fmt == "json":
        header = {"site": query.site.name, "kind": kind, "start": query.time_range.start, "end": query.time_range.end}
        body = _json_chunks(header, rows, next_cursor)
    else:
        body = _ndjson_lines(rows)
    response = StreamingHttpResponse(_batched(body), content_type=CONTENT_TYPES[fmt])
    response["Content-Disposition"] = f'attachment; filename="{_filename(query, kind, label, fmt)}"'
    # Every page is different (new beacons arrive); a proxy must not keep one.
    response["Cache-Control"] = "no-store"
    if next_url:
        response["Link"] = f'<{next_url}>; rel="next"'
    return response


def _filename(query: DashboardQuery, kind: str, label: str, fmt: str) -> str:
    # Only slug characters, digits and "-": safe inside the quoted header value.
    moment = "%Y%m%dT%H%MZ"
    parts = ["perfhub", query.site.name, kind, label, f"{query.time_range.start:{moment}}"]
    parts.append(f"{query.time_range.end:{moment}}")
    return "-".join(p for p in parts if p) + f".{fmt}"


def route_records(rows: list[RouteRow]) -> tuple[tuple[str, ...], Iterator[dict[str, Any]]]:
    """The routes table as flat records: one column per metric's value,
    rating and samples, so the CSV and JSON have the same columns."""
    columns: tuple[str, ...] = ("route", "pageviews", "samples", "too_few_samples", "worst")
    for name in METRIC_ORDER:
        columns += (f"{name}_value", f"{name}_rating", f"{name}_samples")

    def records() -> Iterator[dict[str, Any]]:
        for row in rows:
            record: dict[str, Any] = {
                "route": row.route,
                "pageviews": row.pageviews,
                "samples": row.samples,
                "too_few_samples": row.too_few_samples,
                "worst": row.worst,
            }
            for name, metric in row.metrics.items():
                record[f"{name}_value"] = metric.value
                record[f"{name}_rating"] = metric.rating
                record[f"{name}_samples"] = metric.samples
            yield record

    return columns, records()


def routes_response(query: DashboardQuery, rows: list[RouteRow], *, fmt: str) -> StreamingHttpResponse:
    columns, records = route_records(rows)
    return _response(query, kind="routes", fmt=fmt, columns=columns, rows=records, label=f"p{query.percentile}")


def series_response(query: DashboardQuery, series: MetricSeries, *, fmt: str) -> StreamingHttpResponse:
    columns = ("bucket_start", "value", "samples")
    records = ({"bucket_start": p.bucket_start, "value": p.value, "samples": p.samples} for p in series.points)
    return _response(
        query, kind="series", fmt=fmt, columns=columns, rows=records, label=f"{series.name}-p{series.percentile}"
    )


def raw_metrics(query: DashboardQuery, *, name: str | None = None) -> QuerySet[Metric]:
    """The raw rows that ``query`` covers, in (occurred_at, id) order. Uses
    the index vitals_metric_site_time (site, occurred_at); the ``day``
    bounds let PostgreSQL skip the partitions outside the range."""
    start, end = query.time_range.start, query.time_range.end
    rows = Metric.objects.filter(
        site=query.site,
        day__gte=start.date(),
        day__lte=(end - timedelta(microseconds=1)).date(),
        occurred_at__gte=start,
        occurred_at__lt=end,
        **query.filter_dict(),
    )
    if query.route is not None:
        rows = rows.filter(route=query.route)
    if name is not None:
        rows = rows.filter(name=name)
    return rows.order_by("occurred_at", "id")


def raw_response(
    request: Request,
    query: DashboardQuery,
    *,
    name: str | None,
    after: tuple[datetime, int] | None,
    limit: int,
    fmt: str,
) -> StreamingHttpResponse:
    """One page of raw rows: ``limit`` rows after the cursor ``after``. Two
    queries: the page's last key and whether anything follows it (for the
    Link header, which must be sent before the body), then the rows."""
    rows = raw_metrics(query, name=name)
    if after is not None:
        moment, pk = after
        # The plain bound lets the index scan start at the cursor rather
        # than at the range's start (each page then costs the same), and the
        # day bound skips the partitions already read; the OR breaks ties
        # between rows of one moment.
        rows = rows.filter(day__gte=moment.date(), occurred_at__gte=moment).filter(
            Q(occurred_at__gt=moment) | Q(id__gt=pk)
        )
    boundary = list(rows.values_list("occurred_at", "id")[limit - 1 : limit + 1])
    next_cursor = cursor_encode(*boundary[0]) if len(boundary) == 2 else None
    next_url = replace_query_param(request.build_absolute_uri(), "after", next_cursor) if next_cursor else None

    def records() -> Iterator[dict[str, Any]]:
        for values in rows.values_list(*RAW_COLUMNS)[:limit].iterator(chunk_size=CHUNK_SIZE):
            record = dict(zip(RAW_COLUMNS, values, strict=True))
            record["rating"] = _RATINGS.get(record["rating"], record["rating"])
            yield record

    label = name or ""
    return _response(
        query,
        kind="raw",
        fmt=fmt,
        columns=RAW_COLUMNS,
        rows=records(),
        next_cursor=next_cursor,
        next_url=next_url,
        label=label,
    )
