"""The beacon endpoint against DESIGN.md's contract, on whichever path this
run uses: the Redis stream and the worker's consumer (DATABASE_URL and
REDIS_URL set), or in-request database writes (the embedded default).

Every test runs twice: through the WSGI path gunicorn serves beacons by
(apps.vitals.wsgi), and through Django's handler and the view."""

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from pytest_django.fixtures import Settings as SettingsWrapper

from apps.vitals.beacon import REPORTED_BEFORE, decode_body, parse_beacon
from apps.vitals.collect import forget_cached_sites
from apps.vitals.models import BUILTIN_SITE, Metric, Rating, Rollup, RouteRule, Site
from apps.vitals.normalize import parse_user_agent
from tests.vitals.helpers import CHROME_DESKTOP, ORIGIN, BeaconClient, beacon, drain, lcp, metric_id, post

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["wsgi", "django"])
def client(request: pytest.FixtureRequest) -> Client:
    return BeaconClient() if request.param == "wsgi" else Client()


@pytest.fixture(autouse=True)
def _fresh_site_cache() -> None:
    forget_cached_sites()


@pytest.fixture
def site() -> Site:
    return Site.objects.create(name="shop", allowed_origins=[ORIGIN], kept_query_params=["ref"])


def test_a_beacon_is_accepted_stored_and_rolled_up(client: Client, site: Site) -> None:
    response = post(client, site, beacon(lcp(), {"name": "CLS", "value": 0.02, "id": metric_id(2)}))
    assert response.status_code == 202
    assert response.json() == {"accepted": 2, "rejected": 0}
    assert response["Access-Control-Allow-Origin"] == ORIGIN
    drain()
    row = Metric.objects.get(site=site, name="LCP")
    assert row.value == 2310.5
    assert row.rating == Rating.GOOD
    # Query string stripped but for the kept parameter; fragment gone.
    assert row.path == "/products/42"
    assert row.route == "/products/:id"
    assert (row.device_class, row.browser, row.os) == ("desktop", "Chrome", "Windows")
    assert row.release == "2026.11.27-abc123"
    assert row.connection == "4g"
    assert row.attribution == {"target": "main > img.hero", "url": "https://cdn.example.com/hero.jpg"}
    assert row.weight == 1.0
    rollups = Rollup.objects.filter(site=site)
    assert {r.name: r.samples for r in rollups} == {"LCP": 1, "CLS": 1}


def test_no_ip_address_or_stripped_query_is_stored(client: Client, site: Site) -> None:
    post(client, site, beacon(lcp()), REMOTE_ADDR="203.0.113.77")
    drain()
    stored = json.dumps(list(Metric.objects.values()), default=str)
    assert "203.0.113.77" not in stored
    assert "utm_source" not in stored and "reviews" not in stored


def test_long_labels_are_cut_not_refused(client: Client, site: Site) -> None:
    response = post(client, site, beacon(lcp(), route="/" + "r" * 300, release="v" * 150))
    assert response.status_code == 202
    drain()
    row = Metric.objects.get()
    assert (len(row.route), len(row.release)) == (200, 100)


def test_the_endpoint_sets_no_cookies(client: Client, site: Site) -> None:
    # sendBeacon sends a site's cookies for PerfHub's origin along; PerfHub
    # must never set any of its own there.
    response = post(client, site, beacon(lcp()))
    assert response.status_code == 202
    assert not response.cookies


def test_the_server_recomputes_the_rating(client: Client, site: Site) -> None:
    post(client, site, beacon(lcp(5000.0, rating="good")))
    drain()
    assert Metric.objects.get().rating == Rating.POOR


def test_sampled_beacons_are_weighted(client: Client, site: Site) -> None:
    post(client, site, beacon(lcp(), sample_rate=0.25))
    drain()
    assert Metric.objects.get().weight == 4.0
    assert Rollup.objects.get().weight == 4.0


def test_a_re_reported_metric_counts_once_with_its_latest_value(client: Client, site: Site) -> None:
    cls_id = metric_id(7)
    post(client, site, beacon({"name": "CLS", "value": 0.05, "id": cls_id}))
    drain()
    post(client, site, beacon({"name": "CLS", "value": 0.3, "id": cls_id}))
    post(client, site, beacon({"name": "CLS", "value": 0.3, "id": cls_id}))  # re-delivered
    drain()
    row = Metric.objects.get()
    assert row.value == 0.3 and row.rating == Rating.POOR
    rollup = Rollup.objects.get()
    assert (rollup.samples, rollup.good, rollup.poor) == (1, 0, 1)


def test_first_reports_are_told_from_later_ones_by_their_delta(client: Client, site: Site) -> None:
    inp, cls, other_cls = metric_id(8), metric_id(9), metric_id(10)
    first_reports = beacon(
        {"name": "INP", "value": 120, "delta": 120, "id": inp}, {"name": "CLS", "value": 0.05, "delta": 0.05, "id": cls}
    )
    post(client, site, first_reports)
    drain()
    # In one drain: the first reports sent again (as a re-delivered stream
    # entry would be), a later report of INP, and a CLS that gives no delta.
    post(client, site, first_reports)
    post(client, site, beacon({"name": "INP", "value": 300, "delta": 180, "id": inp}))
    post(client, site, beacon({"name": "CLS", "value": 0.01, "id": other_cls}))
    drain()
    assert dict(Metric.objects.values_list("metric_id", "value")) == {inp: 300, cls: 0.05, other_cls: 0.01}
    assert sum(Rollup.objects.values_list("samples", flat=True)) == 3
    assert Rollup.objects.get(name="INP").value_sum == 300


def test_site_route_rules_come_before_automatic_ids(client: Client, site: Site) -> None:
    RouteRule.objects.create(site=site, position=0, pattern=r"^/products/\d+$", route="/p/:product")
    post(client, site, beacon(lcp()))
    drain()
    assert Metric.objects.get().route == "/p/:product"


def test_a_route_the_page_declares_wins(client: Client, site: Site) -> None:
    post(client, site, beacon(lcp(), route="/products/[slug]"))
    drain()
    assert Metric.objects.get().route == "/products/[slug]"


def test_a_bare_web_vitals_metric_is_accepted_with_the_referer(client: Client, site: Site) -> None:
    bare = {"name": "INP", "value": 180, "id": metric_id(3), "rating": "good", "navigationType": "reload"}
    response = post(client, site, bare, content_type="application/json", HTTP_REFERER=f"{ORIGIN}/cart?x=1")
    assert response.status_code == 202
    drain()
    row = Metric.objects.get()
    assert (row.name, row.path, row.navigation_type) == ("INP", "/cart", "reload")


def test_a_mixed_batch_keeps_the_valid_metrics(client: Client, site: Site) -> None:
    body = beacon(
        lcp(),
        {"name": "FID", "value": 10, "id": metric_id(2)},
        {"name": "CLS", "value": -1, "id": metric_id(3)},
        {"name": "TTFB", "value": 10**9, "id": metric_id(4)},
        {"name": "INP", "value": "fast", "id": metric_id(5)},
    )
    response = post(client, site, body)
    assert response.status_code == 202
    payload = response.json()
    assert (payload["accepted"], payload["rejected"]) == (1, 4)
    assert [e["field"] for e in payload["errors"]] == [
        "metrics[1].name",
        "metrics[2].value",
        "metrics[3].value",
        "metrics[4].value",
    ]
    drain()
    assert list(Metric.objects.values_list("name", flat=True)) == ["LCP"]


def test_nan_and_infinity_are_rejected_per_metric(client: Client, site: Site) -> None:
    raw = json.dumps(beacon(lcp())).replace('"metrics": [', '"metrics": [{"name": "CLS", "value": NaN, "id": "a"}, ')
    raw = raw.replace('"metrics": [', '"metrics": [{"name": "FCP", "value": Infinity, "id": "b"}, ')
    response = post(client, site, raw)
    assert response.status_code == 202
    assert response.json()["accepted"] == 1
    assert {e["error"] for e in response.json()["errors"]} == {"value must be finite"}


@pytest.mark.parametrize(
    ("body", "value"),
    [
        pytest.param(json.dumps(beacon(lcp())).encode("utf-16"), 2310.5, id="utf-16"),
        pytest.param(b"\xef\xbb\xbf" + json.dumps(beacon(lcp())).encode(), 2310.5, id="byte order mark"),
        pytest.param(json.dumps(beacon(lcp(value=1e300))).replace("1e+300", "1e400").encode(), None, id="1e400"),
    ],
)
def test_what_orjson_refuses_is_read_as_the_json_module_reads_it(
    client: Client, site: Site, body: bytes, value: float | None
) -> None:
    assert decode_body(body) == json.loads(body)
    response = post(client, site, body)
    assert response.status_code == (202 if value else 400), response.json()
    drain()
    assert list(Metric.objects.filter(site=site).values_list("value", flat=True)) == ([value] if value else [])


@pytest.mark.parametrize("sent_at", [1e300, -1e300, 10**30])
def test_a_sent_at_far_off_any_clock_is_stored_at_the_arrival_or_a_day_before(
    client: Client, site: Site, sent_at: float
) -> None:
    response = post(client, site, beacon(lcp(), sent_at=sent_at))
    assert response.status_code == 202
    drain()
    row = Metric.objects.get(site=site)
    assert timezone.now() - timedelta(days=1, minutes=1) <= row.occurred_at <= timezone.now()


def test_each_metric_starts_when_the_page_its_id_names_was_loaded(client: Client, site: Site) -> None:
    sent_ms = int(timezone.now().timestamp() * 1000)
    metrics = [
        lcp(id=metric_id(1, started_ms=sent_ms - 60_000)),
        lcp(id=metric_id(2, started_ms=sent_ms - 60_000)),
        lcp(id=metric_id(3, started_ms=sent_ms - 10_000)),
        lcp(id="no-load-time-here"),
    ]
    assert post(client, site, beacon(*metrics, sent_at=sent_ms)).status_code == 202
    drain()
    occurred = dict(Metric.objects.filter(site=site).values_list("metric_id", "occurred_at"))
    first, second, third, plain = (occurred[metric["id"]] for metric in metrics)
    assert first == second
    assert timedelta(seconds=49) < third - first < timedelta(seconds=51)
    assert timedelta(seconds=9) < plain - third < timedelta(seconds=11)  # no load time: the arrival


def test_an_integer_beyond_64_bits_in_attribution_is_dropped_not_a_failed_write(client: Client, site: Site) -> None:
    # NaN sends the body to the json module, which keeps big integers whole;
    # the stream's JSON cannot write them.
    metrics = [{"name": "CLS", "value": "NaN", "id": "a"}, lcp(attribution={"huge": 10**30, "url": "/hero.png"})]
    raw = json.dumps(beacon(*metrics)).replace('"NaN"', "NaN")
    response = post(client, site, raw)
    assert response.status_code == 202
    assert response.json()["accepted"] == 1
    drain()
    assert Metric.objects.get(site=site).attribution == {"url": "/hero.png"}


@pytest.mark.parametrize("field", ["release", "url"])
def test_a_lone_surrogate_gets_400_not_a_failed_write(client: Client, site: Site, field: str) -> None:
    # A JSON escape for half of a UTF-16 pair: valid JSON, but no text that
    # PostgreSQL, SQLite or the stream could store.
    response = post(client, site, json.dumps(beacon(lcp(), **{field: "https://shop.example.com/\ud800"})))
    assert response.status_code == 400
    assert response.json()["field"] == "$"
    assert "lone surrogate" in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ("{not json", "$", "malformed JSON"),
        ("[1, 2]", "$", "expected a JSON object"),
        ("", "$", "empty body"),
        (json.dumps(beacon(lcp(), url=5)), "url", "url is required"),
        (json.dumps(beacon(lcp(), url="ftp://shop.example.com/")), "url", "http or https"),
        (json.dumps(beacon(lcp(), sample_rate="half")), "sample_rate", "sample_rate must be"),
        (json.dumps(beacon(lcp(), sample_rate=0)), "sample_rate", "sample_rate must be"),
        (json.dumps(beacon(lcp(), v=2)), "v", "unsupported beacon version"),
        (json.dumps(beacon(lcp(), release=["x"])), "release", "release must be a string"),
        (json.dumps(beacon(lcp(), release="x" * 2001)), "release", "longer than 2000"),
        (json.dumps(beacon(metrics={"LCP": 1})), "metrics", "non-empty list"),
        (json.dumps(beacon(*[lcp(n=i) for i in range(51)])), "metrics", "at most 50"),
        (json.dumps(beacon({"name": "FID", "value": 1, "id": "x"})), "metrics[0].name", "unknown metric 'FID'"),
        (json.dumps(beacon({"name": "LCP", "value": -5, "id": "x"})), "metrics[0].value", "between 0 and 120000"),
        (json.dumps(beacon({"name": "CLS", "value": 101, "id": "x"})), "metrics[0].value", "between 0 and 100"),
        (json.dumps(beacon({"name": "LCP", "value": 5, "id": "x" * 65})), "metrics[0].id", "id must be"),
        (json.dumps(beacon({"name": "LCP", "value": True, "id": "x"})), "metrics[0].value", "must be a number"),
    ],
)
def test_malformed_beacons_get_400_naming_the_field(
    client: Client, site: Site, body: str, field: str, message: str
) -> None:
    response = post(client, site, body)
    assert response.status_code == 400, response.content
    assert response.json()["field"] == field
    assert message in response.json()["error"]
    drain()
    assert not Metric.objects.exists()


def test_an_oversized_body_gets_413(client: Client, site: Site) -> None:
    body = json.dumps(beacon(lcp(), release="x")) + " " * (65 * 1024)
    response = post(client, site, body)
    assert response.status_code == 413
    assert "65536" in response.json()["error"]


def test_other_content_types_get_415(client: Client, site: Site) -> None:
    response = post(client, site, "metrics=LCP", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert "text/plain or application/json" in response.json()["error"]


def test_a_missing_key_gets_400_and_an_unknown_key_403(client: Client, site: Site) -> None:
    missing = client.post("/api/v1/vitals/collect", data="{}", content_type="text/plain")
    assert missing.status_code == 400
    assert missing.json()["field"] == "key"
    unknown = client.post("/api/v1/vitals/collect?key=nope", data="{}", content_type="text/plain")
    assert unknown.status_code == 403
    assert unknown.json()["field"] == "key"


def test_the_key_may_come_as_a_header(client: Client, site: Site) -> None:
    response = client.post(
        "/api/v1/vitals/collect",
        data=json.dumps(beacon(lcp())),
        content_type="application/json",
        HTTP_X_PERFHUB_KEY=site.public_key,
        HTTP_ORIGIN=ORIGIN,
        HTTP_USER_AGENT=CHROME_DESKTOP,
    )
    assert response.status_code == 202


@pytest.mark.parametrize(
    "query",
    [
        "key={key}&ref=mail",
        "ref=mail&key={key}",
        "key=nope&key={key}",  # the last, as Django's QueryDict.get
        "key=%{first:02X}{rest}",  # percent-encoded
    ],
)
def test_the_key_is_read_from_any_query_string_as_django_reads_it(client: Client, site: Site, query: str) -> None:
    key = site.public_key
    response = client.post(
        "/api/v1/vitals/collect?" + query.format(key=key, first=ord(key[0]), rest=key[1:]),
        data=json.dumps(beacon(lcp())),
        content_type="text/plain",
        HTTP_ORIGIN=ORIGIN,
        HTTP_USER_AGENT=CHROME_DESKTOP,
    )
    assert response.status_code == 202, response.json()


def test_an_origin_off_the_allow_list_gets_403(client: Client, site: Site) -> None:
    response = post(client, site, beacon(lcp()), origin="https://evil.example.net")
    assert response.status_code == 403
    assert response.json()["field"] == "origin"
    assert "Access-Control-Allow-Origin" not in response


def test_the_builtin_site_takes_only_perfhubs_own_origin(client: Client) -> None:
    site = Site.objects.get(name=BUILTIN_SITE)
    assert post(client, site, beacon(lcp()), origin="http://testserver").status_code == 202
    assert post(client, site, beacon(lcp(n=2)), origin=ORIGIN).status_code == 403


def test_cors_preflight_for_json_beacons(client: Client, site: Site) -> None:
    allowed = client.options(
        f"/api/v1/vitals/collect?key={site.public_key}",
        HTTP_ORIGIN=ORIGIN,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="content-type",
    )
    assert allowed.status_code == 204
    assert allowed["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in allowed["Access-Control-Allow-Methods"]
    assert "Content-Type" in allowed["Access-Control-Allow-Headers"]
    refused = client.options(f"/api/v1/vitals/collect?key={site.public_key}", HTTP_ORIGIN="https://evil.example.net")
    assert refused.status_code == 403


def test_other_methods_get_405(client: Client, site: Site) -> None:
    response = client.get(f"/api/v1/vitals/collect?key={site.public_key}")
    assert response.status_code == 405
    assert response["Allow"] == "POST, OPTIONS"


def test_a_flood_from_one_ip_gets_429_with_retry_after(client: Client, site: Site, settings: SettingsWrapper) -> None:
    settings.VITALS_RATE_LIMIT_PER_IP = 3
    statuses = [post(client, site, beacon(lcp(n=i)), REMOTE_ADDR="198.51.100.9").status_code for i in range(5)]
    assert statuses == [202, 202, 202, 429, 429]
    refused = post(client, site, beacon(lcp(n=9)), REMOTE_ADDR="198.51.100.9")
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert "too many beacons from this IP" in refused.json()["error"]
    # Another client is not affected.
    assert post(client, site, beacon(lcp(n=10)), REMOTE_ADDR="198.51.100.10").status_code == 202
    # Refused beacons were not stored: on the production path the count and
    # the append are one script, which appends only within the limits.
    drain()
    assert Metric.objects.filter(site=site).count() == 4


def test_a_flood_of_bad_or_bot_beacons_gets_429_too(client: Client, site: Site, settings: SettingsWrapper) -> None:
    settings.VITALS_RATE_LIMIT_PER_IP = 3
    googlebot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    outcomes = ("http_400", "bot", "http_429")
    before = {o: REGISTRY.get_sample_value("perfhub_vitals_beacons_total", {"outcome": o}) or 0 for o in outcomes}
    statuses = [
        post(client, site, "{not json", REMOTE_ADDR="198.51.100.9").status_code,
        post(client, site, beacon(lcp(value=-5)), REMOTE_ADDR="198.51.100.9").status_code,
        post(client, site, beacon(lcp()), user_agent=googlebot, REMOTE_ADDR="198.51.100.9").status_code,
        post(client, site, "{not json", REMOTE_ADDR="198.51.100.9").status_code,
        post(client, site, beacon(lcp()), REMOTE_ADDR="198.51.100.9").status_code,
    ]
    assert statuses == [400, 400, 202, 429, 429]
    # Each beacon is counted under one outcome: a refused bad one as a 429,
    # not as a 400 too.
    after = {o: REGISTRY.get_sample_value("perfhub_vitals_beacons_total", {"outcome": o}) or 0 for o in outcomes}
    assert {o: after[o] - before[o] for o in outcomes} == {"http_400": 2, "bot": 1, "http_429": 2}
    drain()
    assert not Metric.objects.filter(site=site).exists()


def test_a_site_wide_limit_applies_across_ips(client: Client, site: Site, settings: SettingsWrapper) -> None:
    settings.VITALS_RATE_LIMIT_PER_SITE = 2
    responses = [post(client, site, beacon(lcp(n=i)), REMOTE_ADDR=f"198.51.100.{i}") for i in range(3)]
    statuses = [response.status_code for response in responses]
    assert statuses == [202, 202, 429]
    assert "too many beacons from this site" in responses[2].json()["error"]


def test_bots_are_dropped_and_counted(client: Client, site: Site) -> None:
    googlebot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    response = post(client, site, beacon(lcp()), user_agent=googlebot)
    assert response.status_code == 202
    assert response.json() == {"accepted": 0, "rejected": 0, "ignored": "bot"}
    drain()
    assert not Metric.objects.exists()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=30),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=5),
        max_leaves=20,
    )
)
def test_no_input_ever_gives_a_500(client: Client, site: Site, junk: object) -> None:
    bodies: list[object] = [
        junk,
        beacon(lcp(), metrics=junk),
        beacon(lcp(), url=junk),
        {"name": "LCP", "value": junk, "id": "x"},
    ]
    for body in bodies:
        try:
            text = json.dumps(body)
        except (ValueError, TypeError):
            continue
        response = post(client, site, text)
        assert response.status_code in {202, 400}, (body, response.content)


@pytest.mark.parametrize(
    ("fields", "reported_before"),
    [
        ({"value": 120, "delta": 120}, False),
        ({"value": 0, "delta": 0}, False),
        ({"value": 300, "delta": 180}, True),
        ({"value": 120}, True),
        ({"value": 120, "delta": "120"}, True),
    ],
)
def test_a_records_first_report_flag_follows_the_metrics_delta(
    site: Site, fields: dict[str, object], reported_before: bool
) -> None:
    parsed = parse_beacon(
        beacon({"name": "INP", "id": metric_id(1), **fields}),
        site=site,
        rules=[],
        client=parse_user_agent(CHROME_DESKTOP),
        country="",
        referer="",
        received_at=timezone.now(),
    )
    assert parsed.records[0][REPORTED_BEFORE] is reported_before


def test_beacons_skip_the_page_middleware_but_are_counted_logged_and_host_checked(client: Client, site: Site) -> None:
    series = "django_http_requests_total_by_view_transport_method_total"
    labels = {"view": "vitals-collect", "transport": "http", "method": "POST"}
    before = REGISTRY.get_sample_value(series, labels) or 0
    response = post(client, site, beacon(lcp()))
    assert response.status_code == 202
    # Counted under the view's name and given a request id by the
    # instrumentation above BeaconMiddleware; no page middleware below it ran.
    assert REGISTRY.get_sample_value(series, labels) == before + 1
    assert response["X-Request-ID"]
    assert "X-Frame-Options" not in response
    assert "Content-Security-Policy" not in response
    assert post(client, site, beacon(lcp(n=2)), HTTP_HOST="evil.example").status_code == 400
