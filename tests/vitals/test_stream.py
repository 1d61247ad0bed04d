"""The production path: Redis stream, consumer group, and the degradation
rules of DESIGN.md, against the real Redis and PostgreSQL."""

import gc
import json
import subprocess

import pytest
from django.conf import settings
from django.test import Client, override_settings
from pytest_django.fixtures import Settings as SettingsWrapper

from apps.core.ratelimit import Limit, LocalCounts, Window, current_window
from apps.resilience.breakers import redis_stream
from apps.vitals import stream
from apps.vitals.beacon import REPORTED_BEFORE
from apps.vitals.collect import forget_cached_sites
from apps.vitals.models import Metric, Rollup, Site
from apps.vitals.services import BEACON_RATE_WINDOW, metrics_store
from apps.vitals.stream import GROUP, STREAM, StreamConsumer, gc_tuned_for_batches, redis_client
from tests.helpers import BASE_DIR, PYTHON, postgres_configured, redis_configured, require, subprocess_env
from tests.vitals.helpers import CHROME_DESKTOP, ORIGIN, beacon, drain, lcp, metric_id, post

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _production_path() -> None:
    require(redis_configured() and postgres_configured(), "the stream needs Redis and PostgreSQL")
    forget_cached_sites()
    redis_stream.close()


@pytest.fixture
def site() -> Site:
    return Site.objects.create(name="shop", allowed_origins=[ORIGIN])


def store(records: list[dict[str, object]]) -> None:
    metrics_store(records=records)


def test_a_202_means_the_beacon_is_in_the_stream_before_any_worker_runs(client: Client, site: Site) -> None:
    assert post(client, site, beacon(lcp(), lcp(n=2))).status_code == 202
    assert redis_client().xlen(STREAM) == 1
    assert not Metric.objects.exists()
    assert drain() == 2
    assert Metric.objects.count() == 2
    # Written, acknowledged and deleted: nothing left pending.
    assert redis_client().xlen(STREAM) == 0


def test_entries_of_a_dead_consumer_are_reclaimed_and_counted_once(
    client: Client, site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    bodies = [beacon(lcp(n=n)) for n in range(3)]
    for body in bodies:
        post(client, site, body)
    dead = StreamConsumer(store=store, name="dead-worker", block_ms=10)
    dead.ensure_group()
    # It reads the entries and dies before writing or acknowledging them.
    dead.client.xreadgroup(GROUP, "dead-worker", {STREAM: ">"}, count=10)
    assert redis_client().xpending(STREAM, GROUP)["pending"] == 3

    alive = StreamConsumer(store=store, name="alive-worker", block_ms=10)
    assert alive.poll() == 0  # nothing new for it to read
    monkeypatch.setattr(stream, "CLAIM_IDLE_MS", 0)
    assert alive.reclaim() == 3
    assert Metric.objects.count() == 3
    assert redis_client().xpending(STREAM, GROUP)["pending"] == 0
    # Had the dead worker written them after all, a re-delivery changes nothing.
    for body in bodies:
        post(client, site, body)
    drain()
    assert Metric.objects.count() == 3
    assert sum(Rollup.objects.values_list("samples", flat=True)) == 3


def test_an_undecodable_entry_goes_to_the_dead_letter_stream(site: Site) -> None:
    consumer = StreamConsumer(store=store, block_ms=10)
    consumer.ensure_group()
    redis_client().xadd(STREAM, {"r": b"not json"})
    assert consumer.poll() == 0
    dead = redis_client().xrange(stream.DEAD_LETTERS)
    assert len(dead) == 1 and dead[0][1][b"r"] == b"not json"
    assert redis_client().xlen(STREAM) == 0


@pytest.mark.django_db(transaction=True)
def test_when_redis_is_down_beacons_go_straight_to_the_database(client: Client, site: Site) -> None:
    dead_redis = {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:1/0"}
    try:
        with override_settings(CACHES={"default": dead_redis}):
            for n in range(4):
                response = post(client, site, beacon(lcp(n=n)))
                assert response.status_code == 202, response.content
            # Stored in the request, without a worker.
            assert Metric.objects.count() == 4
            # After repeated failures the breaker is open: no more waiting on Redis.
            assert redis_stream.current_state == "open"
    finally:
        redis_stream.close()


def _post_in_subprocess(site: Site, **env: str) -> tuple[int, dict[str, object]]:
    script = (
        "import json, sys, django; django.setup();"
        "from django.test import Client;"
        "r = Client().post('/api/v1/vitals/collect?key=' + sys.argv[1], data=sys.argv[2], content_type='text/plain',"
        f" HTTP_ORIGIN={ORIGIN!r}, HTTP_USER_AGENT={CHROME_DESKTOP!r});"
        "print(r.status_code); print(json.dumps(r.json()))"
    )
    result = subprocess.run(
        [PYTHON, "-c", script, site.public_key, json.dumps(beacon(lcp(n=99)))],
        cwd=BASE_DIR,
        env=subprocess_env(ALLOWED_HOSTS="testserver", **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = result.stdout.strip().splitlines()
    assert len(lines) >= 2, result.stderr
    return int(lines[-2]), json.loads(lines[-1])


def test_when_postgresql_is_down_beacons_wait_in_the_stream(client: Client, site: Site) -> None:
    # A first beacon while everything is up puts the site in the shared cache.
    assert post(client, site, beacon(lcp(n=1))).status_code == 202
    status, body = _post_in_subprocess(site, DATABASE_URL="postgres://postgres@127.0.0.1:1/perfhub")
    assert (status, body) == (202, {"accepted": 1, "rejected": 0})
    assert redis_client().xlen(STREAM) == 2
    # "After recovery": a worker with a working database drains everything.
    assert drain() == 2
    assert Metric.objects.count() == 2


def test_a_worker_whose_database_is_down_leaves_entries_pending(client: Client, site: Site) -> None:
    post(client, site, beacon(lcp(n=1), lcp(n=2)))
    script = (
        "import django; django.setup();"
        "from apps.vitals.services import metrics_store;"
        "from apps.vitals.stream import StreamConsumer;"
        "c = StreamConsumer(store=lambda r: metrics_store(records=r), name='unlucky', block_ms=10);"
        "c.ensure_group();"
        "c.poll()"
    )
    result = subprocess.run(
        [PYTHON, "-c", script],
        cwd=BASE_DIR,
        env=subprocess_env(DATABASE_URL="postgres://postgres@127.0.0.1:1/perfhub"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "OperationalError" in result.stderr
    assert redis_client().xpending(STREAM, GROUP)["pending"] == 1
    # The same worker, restarted with its database back, retries its own
    # pending entries first.
    again = StreamConsumer(store=store, name="unlucky", block_ms=10)
    assert again.poll() == 2
    assert Metric.objects.count() == 2
    assert redis_client().xpending(STREAM, GROUP)["pending"] == 0


def test_entries_appended_as_a_list_of_whole_records_are_still_written(client: Client, site: Site) -> None:
    # Web processes of the previous release append each record whole; the
    # worker drains their entries too.
    post(client, site, beacon(lcp(n=1), lcp(n=2)))
    [(entry_id, fields)] = redis_client().xrange(STREAM)
    records = stream.decode_records(fields[b"r"])
    redis_client().xdel(STREAM, entry_id)
    redis_client().xadd(STREAM, {"r": json.dumps(records, default=lambda moment: moment.isoformat())})
    assert drain() == 2
    assert sorted(Metric.objects.values_list("metric_id", "value")) == sorted(
        (record["metric_id"], record["value"]) for record in records
    )


def test_a_beacons_entry_holds_its_shared_fields_once() -> None:
    shared = {"site_id": 1, "day": "2026-11-27", "occurred_at": "2026-11-27T10:00:00+00:00", "weight": 1.0}
    records = [
        {**shared, "received_at": "2026-11-27T10:00:05+00:00", "metric_id": "a", "value": 1.0, "attribution": {}},
        {**shared, "received_at": "2026-11-27T10:00:05+00:00", "metric_id": "b", "value": 1, "attribution": {"x": 1}},
    ]
    payload = json.loads(stream.encode_records(records))
    assert set(payload["c"]) == {*shared, "received_at"}
    # Equal but not of the same type: kept per record, as they came.
    assert payload["m"] == [
        {"metric_id": "a", "value": 1.0, "attribution": {}},
        {"metric_id": "b", "value": 1, "attribution": {"x": 1}},
    ]
    decoded = stream.decode_records(stream.encode_records(records))
    assert [type(record["value"]) for record in decoded] == [float, int]
    assert [record["day"].isoformat() for record in decoded] == ["2026-11-27", "2026-11-27"]


def test_the_endpoints_entry_holds_the_page_once_and_each_metric_its_own(client: Client, site: Site) -> None:
    post(client, site, beacon(lcp(n=1), {"name": "CLS", "value": 0.02, "id": metric_id(2)}))
    [(_, fields)] = redis_client().xrange(STREAM)
    payload = json.loads(fields[b"r"])
    # Both ids carry the same page load time: one moment, stored once.
    assert {"site_id", "route", "path", "browser", "received_at", "occurred_at", "day"} <= set(payload["c"])
    assert [sorted(own) for own in payload["m"]] == [
        ["attribution", "metric_id", "name", "navigation_type", "rating", REPORTED_BEFORE, "value"]
    ] * 2
    assert drain() == 2
    assert Metric.objects.filter(site=site).count() == 2


def test_batches_are_written_with_automatic_collection_off_and_it_comes_back_on() -> None:
    assert gc.isenabled()
    with gc_tuned_for_batches():
        assert not gc.isenabled()
        assert gc.get_freeze_count() > 0
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_a_beacon_is_appended_after_redis_forgot_the_script(
    client: Client, site: Site, settings: SettingsWrapper
) -> None:
    """The count-and-append script runs by its hash; a Redis restarted or
    told to SCRIPT FLUSH no longer has it, and it is loaded again."""
    require(redis_configured() and postgres_configured(), "the stream needs Redis and PostgreSQL")
    # A limit of 2: past half of it from the first beacon, each beacon is
    # counted by the script.
    settings.VITALS_RATE_LIMIT_PER_IP = 2
    assert post(client, site, beacon(lcp(n=1))).status_code == 202
    redis_client().script_flush()
    assert post(client, site, beacon(lcp(n=2))).status_code == 202
    assert redis_client().xlen(STREAM) == 2
    assert post(client, site, beacon(lcp(n=3))).status_code == 429
    assert redis_client().xlen(STREAM) == 2


def _window(client_ip: str, per_ip: int, per_site: int = 1_000_000) -> Window:
    return current_window(
        [Limit("vitals-ip", client_ip, per_ip), Limit("vitals-site", "1", per_site)], window=BEACON_RATE_WINDOW
    )


def _append(window: Window) -> bool:
    return stream.stream_append({"site_id": 1}, [{"metric_id": "m"}], window).allowed


def _counter(window: Window, index: int) -> int:
    return int(redis_client().get(window.keys[index]) or 0)


def test_far_below_its_limits_a_beacon_is_counted_in_process_and_the_counts_reach_redis_in_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(LocalCounts, "FLUSH_SECONDS", 3600.0)
    window = _window("198.51.100.7", per_ip=1000)
    assert all(_append(window) for _ in range(10))
    assert redis_client().xlen(STREAM) == 10
    # The first beacon of the window brought its count along; the next nine
    # wait for the next flush, which a beacon sends once FLUSH_SECONDS passed.
    assert _counter(window, 0) == 1
    monkeypatch.setattr(LocalCounts, "FLUSH_SECONDS", 0.0)
    assert _append(window)
    assert _counter(window, 0) == 11
    assert _counter(window, 1) == 11
    # The counters expire with their window, like the script's.
    assert 0 < redis_client().ttl(window.keys[0]) <= BEACON_RATE_WINDOW + 1


def test_a_beacon_counted_in_redis_takes_the_processs_other_counts_along(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LocalCounts, "FLUSH_SECONDS", 3600.0)
    first, second = _window("198.51.100.11", per_ip=1000), _window("198.51.100.12", per_ip=1000)
    assert all(_append(first) for _ in range(3))
    assert _counter(first, 0) == 1
    monkeypatch.setattr(LocalCounts, "FLUSH_SECONDS", 0.0)
    assert _append(second)
    assert (_counter(first, 0), _counter(second, 0), _counter(second, 1)) == (3, 1, 4)


def test_a_process_whose_counts_are_old_asks_redis_before_appending(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LocalCounts, "FLUSH_SECONDS", 3600.0)
    window = _window("198.51.100.13", per_ip=100)
    assert _append(window)
    # Other processes took the client past its limit meanwhile.
    redis_client().incrby(window.keys[0], 200)
    # Within FLUSH_SECONDS this process goes by what it knows ...
    assert _append(window)
    # ... and after, the script counts the next beacon, and refuses it.
    monkeypatch.setattr(LocalCounts, "FLUSH_SECONDS", 0.0)
    assert not _append(window)
    assert redis_client().xlen(STREAM) == 2


def test_past_half_its_limit_a_counter_is_counted_with_each_append_and_never_passed() -> None:
    window = _window("198.51.100.8", per_ip=6)
    verdicts = [_append(window) for _ in range(9)]
    assert verdicts == [True] * 6 + [False] * 3
    assert redis_client().xlen(STREAM) == 6
    # Counted in Redis up to the first refusal; after it, refused in process.
    assert _counter(window, 0) == 7


def test_counts_another_process_added_are_learned_at_the_next_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    window = _window("198.51.100.9", per_ip=100)
    assert _append(window)
    # Another process counted 60 beacons from the same client meanwhile.
    redis_client().incrby(window.keys[0], 60)
    monkeypatch.setattr(LocalCounts, "FLUSH_SECONDS", 0.0)
    assert _append(window)  # flushes, and learns the count: 62
    assert _counter(window, 0) == 62
    # Past half of the limit, so counted by the script from now on.
    redis_client().incrby(window.keys[0], 38)
    assert not _append(window)  # 101 > 100
    assert redis_client().xlen(STREAM) == 2
    # Known to be past its limit: refused in process, Redis left alone.
    assert not _append(window)
    assert _counter(window, 0) == 101


def test_a_new_window_starts_from_nothing() -> None:
    window = _window("198.51.100.10", per_ip=2)
    assert [_append(window) for _ in range(3)] == [True, True, False]
    later = Window(window.limits, [f"{key}-later" for key in window.keys], window.seconds, 60, window.start + 60)
    assert _append(later)


def test_a_beacon_is_appended_after_redis_closed_the_connection(client: Client, site: Site) -> None:
    """The append keeps a connection of its own; one that Redis closed
    (a restart, a timeout, CLIENT KILL) is replaced without failing over to
    the database."""
    require(redis_configured() and postgres_configured(), "the stream needs Redis and PostgreSQL")
    assert post(client, site, beacon(lcp(n=1))).status_code == 202
    # Every client but the one asking, so the append's own connection too.
    assert redis_client().client_kill_filter(_type="normal", skipme=True) >= 1
    assert post(client, site, beacon(lcp(n=2))).status_code == 202
    assert redis_client().xlen(STREAM) == 2
    assert not Metric.objects.filter(site=site).exists()  # none went to the database
