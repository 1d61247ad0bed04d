"""Exports: CSV, JSON and NDJSON that parse back to what the API shows,
streamed; raw rows a page at a time with a cursor that returns every row
exactly once; spreadsheet formulas defused."""

import csv
import io
import json
import re
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.test import Client

from apps.vitals.models import Metric, Site
from tests.vitals.dashboard_seed import NOW, latest, raw_record, re_reports, seeded_records, store

pytestmark = pytest.mark.django_db

RANGE: dict[str, Any] = {"start": (NOW - timedelta(days=2)).isoformat(), "end": NOW.isoformat()}
EVERYTHING: dict[str, Any] = {"start": (NOW - timedelta(days=5)).isoformat(), "end": NOW.isoformat()}
EXPORT = "/api/v1/sites/shop/export"


@pytest.fixture
def site() -> Site:
    return Site.objects.create(name="shop", allowed_origins=["*"])


@pytest.fixture
def stored(site: Site) -> list[dict[str, Any]]:
    first = seeded_records(site, pageviews=60)
    later = re_reports(first)
    store(first)
    store(later)
    return latest(first, later)


def download(client: Client, params: dict[str, Any]) -> tuple[Any, str]:
    response: Any = client.get(EXPORT, params)
    assert response.status_code == 200, response.content
    assert response.streaming
    return response, b"".join(response.streaming_content).decode()


def next_link(response: Any) -> str | None:
    link = response.get("Link")
    if link is None:
        return None
    match = re.fullmatch(r'<(.+)>; rel="next"', link)
    assert match, link
    return match.group(1)


def test_the_routes_table_as_csv_json_and_ndjson(viewer_client: Client, stored: list[dict[str, Any]]) -> None:
    api = viewer_client.get("/api/v1/sites/shop/routes", {**RANGE, "page_size": 500}).json()["results"]
    response, text = download(viewer_client, {**RANGE, "kind": "routes", "format": "csv"})
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == (
        'attachment; filename="perfhub-shop-routes-p75-20261125T1200Z-20261127T1200Z.csv"'
    )
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["route"] for r in rows] == [r["route"] for r in api]
    for row, expected in zip(rows, api, strict=True):
        assert float(row["LCP_value"]) == pytest.approx(expected["metrics"]["LCP"]["value"])
        assert int(row["INP_samples"]) == expected["metrics"]["INP"]["samples"]
        assert row["CLS_rating"] == expected["metrics"]["CLS"]["rating"]
        assert float(row["pageviews"]) == expected["pageviews"]

    response, text = download(viewer_client, {**RANGE, "kind": "routes", "format": "json"})
    assert response["Content-Type"] == "application/json"
    document = json.loads(text)
    assert (document["site"], document["kind"], document["next"]) == ("shop", "routes", None)
    assert [r["route"] for r in document["rows"]] == [r["route"] for r in api]
    assert document["rows"][0]["LCP_value"] == api[0]["metrics"]["LCP"]["value"]

    response, text = download(viewer_client, {**RANGE, "kind": "routes", "format": "ndjson"})
    assert response["Content-Type"] == "application/x-ndjson"
    assert [json.loads(line) for line in text.splitlines()] == document["rows"]


def test_a_time_series_as_csv_and_json(viewer_client: Client, stored: list[dict[str, Any]]) -> None:
    api = viewer_client.get("/api/v1/sites/shop/series", {**RANGE, "name": "INP", "p": 95}).json()["points"]
    response, text = download(viewer_client, {**RANGE, "kind": "series", "name": "INP", "p": 95})
    assert 'filename="perfhub-shop-series-INP-p95-20261125T1200Z-20261127T1200Z.csv"' in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(api) == 48
    for row, point in zip(rows, api, strict=True):
        assert datetime.fromisoformat(row["bucket_start"]) == datetime.fromisoformat(point["bucket_start"])
        assert (float(row["value"]) if row["value"] else None) == pytest.approx(point["value"])
        assert int(row["samples"]) == point["samples"]
    _, text = download(viewer_client, {**RANGE, "kind": "series", "name": "INP", "p": 95, "format": "json"})
    assert [r["samples"] for r in json.loads(text)["rows"]] == [p["samples"] for p in api]


def test_raw_rows_parse_back_with_every_column(viewer_client: Client, stored: list[dict[str, Any]]) -> None:
    response, text = download(viewer_client, {**EVERYTHING, "kind": "raw"})
    assert response["Cache-Control"] == "no-store"
    assert response.get("Link") is None
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(stored)
    by_id = {m.metric_id: m for m in Metric.objects.all()}
    for row in rows:
        metric = by_id[row["metric_id"]]
        assert int(row["id"]) == metric.pk
        assert datetime.fromisoformat(row["occurred_at"]) == metric.occurred_at
        assert float(row["value"]) == metric.value
        assert float(row["weight"]) == metric.weight
        assert row["rating"] in {"good", "needs-improvement", "poor"}
        assert json.loads(row["attribution"]) == metric.attribution
    keys = [(datetime.fromisoformat(r["occurred_at"]), int(r["id"])) for r in rows]
    assert keys == sorted(keys)

    _, text = download(viewer_client, {**EVERYTHING, "kind": "raw", "format": "ndjson", "name": "CLS"})
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == sum(1 for r in stored if r["name"] == "CLS")
    assert all(datetime.fromisoformat(line["occurred_at"]) == by_id[line["metric_id"]].occurred_at for line in lines)
    # The latest report of a re-reported metric is the one exported.
    values = {r["metric_id"]: r["value"] for r in stored}
    assert all(line["value"] == values[line["metric_id"]] for line in lines)


def test_raw_rows_follow_the_dashboard_filters(viewer_client: Client, stored: list[dict[str, Any]]) -> None:
    _, text = download(viewer_client, {**RANGE, "kind": "raw", "format": "json", "device_class": "mobile"})
    rows = json.loads(text)["rows"]
    expected = [r for r in stored if r["device_class"] == "mobile" and r["occurred_at"] >= NOW - timedelta(days=2)]
    assert {r["metric_id"] for r in rows} == {r["metric_id"] for r in expected}
    assert all(r["device_class"] == "mobile" for r in rows)


@pytest.mark.parametrize("fmt", ["csv", "json", "ndjson"])
def test_the_cursor_returns_every_row_exactly_once(
    viewer_client: Client, stored: list[dict[str, Any]], fmt: str
) -> None:
    url: str | None = EXPORT
    params: dict[str, Any] | None = {**EVERYTHING, "kind": "raw", "format": fmt, "limit": 37}
    ids: list[int] = []
    pages = 0
    while url:
        response, text = download(viewer_client, params) if params else download_url(viewer_client, url)
        if fmt == "csv":
            page = [int(r["id"]) for r in csv.DictReader(io.StringIO(text))]
        elif fmt == "json":
            document = json.loads(text)
            page = [r["id"] for r in document["rows"]]
            link = next_link(response)
            assert (document["next"] is None) == (link is None)
            if link:
                assert f"after={document['next']}" in link
        else:
            page = [json.loads(line)["id"] for line in text.splitlines()]
        assert len(page) == 37 or next_link(response) is None
        ids += page
        pages += 1
        url, params = next_link(response), None
    assert pages == -(-len(stored) // 37)
    assert sorted(ids) == sorted(Metric.objects.values_list("id", flat=True))
    assert len(ids) == len(set(ids))


def download_url(client: Client, url: str) -> tuple[Any, str]:
    response: Any = client.get(url)
    assert response.status_code == 200, response.content
    assert response.streaming
    return response, b"".join(response.streaming_content).decode()


def test_rows_that_share_a_moment_are_split_across_pages_without_loss(viewer_client: Client, site: Site) -> None:
    """The cursor is (occurred_at, id): a page boundary inside a run of
    metrics of the same page view (same occurred_at) loses none of them."""
    at = NOW - timedelta(hours=1)
    store([raw_record(site, n, name="LCP", value=1000.0 + n, at=at) for n in range(10)])
    ids: list[int] = []
    response, text = download(viewer_client, {**RANGE, "kind": "raw", "format": "ndjson", "limit": 3})
    ids += [json.loads(line)["id"] for line in text.splitlines()]
    while link := next_link(response):
        response, text = download_url(viewer_client, link)
        ids += [json.loads(line)["id"] for line in text.splitlines()]
    assert sorted(ids) == sorted(Metric.objects.values_list("id", flat=True))
    assert len(ids) == 10


def test_spreadsheet_formulas_are_defused_in_csv_only(viewer_client: Client, site: Site) -> None:
    at = NOW - timedelta(hours=1)
    store(
        [
            raw_record(
                site,
                1,
                name="LCP",
                value=1200.0,
                at=at,
                route='=HYPERLINK("https://evil.example","x")',
                path="+SUM(A1)",
                release="-2+3",
                browser="@cmd",
                os="\tTab",
                attribution={"target": "=1+1"},
            )
        ]
    )
    _, text = download(viewer_client, {**RANGE, "kind": "raw"})
    row = next(csv.DictReader(io.StringIO(text)))
    assert row["route"] == '\'=HYPERLINK("https://evil.example","x")'
    assert row["path"] == "'+SUM(A1)"
    assert row["release"] == "'-2+3"
    assert row["browser"] == "'@cmd"
    assert row["os"] == "'\tTab"
    # Numbers stay numbers; JSON cells start with "{".
    assert row["value"] == "1200.0"
    assert json.loads(row["attribution"]) == {"target": "=1+1"}
    _, text = download(viewer_client, {**RANGE, "kind": "routes"})
    assert next(csv.DictReader(io.StringIO(text)))["route"].startswith("'=HYPERLINK")
    _, text = download(viewer_client, {**RANGE, "kind": "raw", "format": "json"})
    assert json.loads(text)["rows"][0]["route"].startswith("=HYPERLINK")


def test_an_empty_range_exports_just_the_header(viewer_client: Client, site: Site) -> None:
    _, text = download(viewer_client, {**RANGE, "kind": "raw"})
    assert text.strip().split(",")[:3] == ["id", "occurred_at", "received_at"]
    assert len(text.strip().splitlines()) == 1
    _, text = download(viewer_client, {**RANGE, "kind": "raw", "format": "json"})
    assert json.loads(text)["rows"] == []
