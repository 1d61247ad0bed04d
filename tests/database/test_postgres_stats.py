"""Each PostgreSQL statistic against a state the test creates."""

import io
import threading
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from prometheus_client import REGISTRY

from apps.core.management.commands.worker import default_jobs
from apps.database import selectors
from apps.database.models import Snapshot, StatementStat, StatementText
from apps.database.services import snapshot_take, snapshots_prune
from tests.database.helpers import (
    execute,
    flush_table_stats,
    other_connection,
    postgres_only,
    require_statements,
)

FIVE_MINUTES = selectors.WINDOWS["5m"]


@pytest.mark.django_db(transaction=True)
def test_a_repeatedly_seq_scanned_table_gets_an_index_suggestion(scratch_tables: list[str]) -> None:
    require_statements()
    scratch_tables.append("perfhub_seqscan_demo")
    execute("CREATE TABLE perfhub_seqscan_demo (id bigint, customer integer, note text)")
    execute("INSERT INTO perfhub_seqscan_demo SELECT g, g % 100, 'n' FROM generate_series(1, 5000) g")
    for customer in range(20):
        execute("SELECT count(*) FROM perfhub_seqscan_demo WHERE customer = %s", [customer])
    flush_table_stats()

    missing = {t["table"]: t for t in selectors.index_advice()["missing"]}

    demo = missing["perfhub_seqscan_demo"]
    assert demo["seq_scans"] >= 20
    assert demo["live_rows"] == 5000
    assert demo["column"] == "customer"
    assert demo["suggestion"] == (
        "CREATE INDEX CONCURRENTLY perfhub_seqscan_demo_customer_idx ON public.perfhub_seqscan_demo (customer);"
    )
    # Suggested, never run.
    assert execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'perfhub_seqscan_demo'") == [(0,)]


@pytest.mark.django_db(transaction=True)
def test_an_indexed_column_is_not_suggested_again(scratch_tables: list[str]) -> None:
    require_statements()
    scratch_tables.append("perfhub_seqscan_indexed")
    execute("CREATE TABLE perfhub_seqscan_indexed (id bigint, customer integer)")
    execute("CREATE INDEX perfhub_seqscan_indexed_customer ON perfhub_seqscan_indexed (customer)")
    execute("INSERT INTO perfhub_seqscan_indexed SELECT g, g % 100 FROM generate_series(1, 5000) g")
    # Sequential all the same: a filter the index cannot serve.
    for n in range(15):
        execute("SELECT count(*) FROM perfhub_seqscan_indexed WHERE customer + 0 = %s", [n])
    flush_table_stats()

    missing = {t["table"]: t for t in selectors.index_advice()["missing"]}

    assert missing["perfhub_seqscan_indexed"]["column"] is None
    assert "(<column>)" in missing["perfhub_seqscan_indexed"]["suggestion"]


@pytest.mark.django_db
def test_duplicate_and_covered_indexes_are_reported() -> None:
    postgres_only()
    execute("CREATE TABLE perfhub_dup (a integer, b integer)")
    execute("CREATE INDEX perfhub_dup_a ON perfhub_dup (a)")
    execute("CREATE INDEX perfhub_dup_a_again ON perfhub_dup (a)")
    execute("CREATE INDEX perfhub_dup_ab ON perfhub_dup (a, b)")
    execute("CREATE UNIQUE INDEX perfhub_dup_b_unique ON perfhub_dup (b)")

    duplicates = {d["index"]: d for d in selectors.index_advice()["duplicate"] if d["table"] == "perfhub_dup"}

    assert duplicates["perfhub_dup_a_again"]["covered_by"] == "perfhub_dup_a"
    assert duplicates["perfhub_dup_a_again"]["suggestion"] == "DROP INDEX CONCURRENTLY public.perfhub_dup_a_again;"
    # A left prefix of a wider b-tree is redundant too.
    assert duplicates["perfhub_dup_a"]["covered_by"] == "perfhub_dup_ab"
    assert set(duplicates) == {"perfhub_dup_a", "perfhub_dup_a_again"}


@pytest.mark.django_db
def test_unused_indexes_leave_out_unique_ones() -> None:
    postgres_only()
    execute("CREATE TABLE perfhub_unused (a integer, b integer)")
    execute("CREATE INDEX perfhub_unused_a ON perfhub_unused (a)")
    execute("CREATE UNIQUE INDEX perfhub_unused_b ON perfhub_unused (b)")

    unused = {u["index"] for u in selectors.index_advice()["unused"] if u["table"] == "perfhub_unused"}

    assert unused == {"perfhub_unused_a"}


@pytest.mark.django_db(transaction=True)
def test_an_invalid_index_left_by_a_failed_concurrent_build_is_reported(scratch_tables: list[str]) -> None:
    postgres_only()
    scratch_tables.append("perfhub_invalid")
    execute("CREATE TABLE perfhub_invalid (a integer)")
    execute("INSERT INTO perfhub_invalid VALUES (1), (1)")
    with pytest.raises(Exception, match="could not create unique index"):
        execute("CREATE UNIQUE INDEX CONCURRENTLY perfhub_invalid_a ON perfhub_invalid (a)")

    invalid = {i["index"]: i for i in selectors.index_advice()["invalid"]}

    assert "perfhub_invalid_a" in invalid
    assert invalid["perfhub_invalid_a"]["suggestion"].startswith("DROP INDEX CONCURRENTLY public.perfhub_invalid_a;")


@pytest.mark.django_db(transaction=True)
def test_a_slow_query_appears_in_the_window_with_its_calls_from_snapshot_deltas() -> None:
    require_statements()
    execute("SELECT pg_sleep(0.01) AS perfhub_slow_marker")  # known to the extension before the window
    call_command("database_snapshot", stdout=io.StringIO())
    for _ in range(5):
        execute("SELECT pg_sleep(%s) AS perfhub_slow_marker", [0.05])
    out = io.StringIO()
    call_command("database_snapshot", stdout=out)
    assert "statement(s)" in out.getvalue()

    slow = selectors.slow_queries(window=FIVE_MINUTES)

    assert slow["available"]
    [marker] = [s for s in slow["statements"] if "perfhub_slow_marker" in s["query"]]
    assert marker["calls"] == 5
    assert marker["total_time_ms"] >= 250
    assert marker["mean_time_ms"] >= 50
    assert marker["rows"] == 5
    assert 0 < marker["share"] <= 1
    assert not marker["counters_restarted"]
    assert slow["statements"][0]["total_time_ms"] >= marker["total_time_ms"]  # ranked by total time
    assert abs(sum(s["share"] for s in slow["statements"]) - 1) < 0.01
    assert not slow["covers_full_window"]  # two snapshots seconds apart


@pytest.mark.django_db(transaction=True)
def test_the_window_starts_at_the_snapshot_before_it() -> None:
    require_statements()
    now = timezone.now()
    old = Snapshot.objects.create(taken_at=now - timedelta(hours=2), has_statements=True)
    start = Snapshot.objects.create(taken_at=now - timedelta(minutes=70), has_statements=True)
    end = Snapshot.objects.create(taken_at=now, has_statements=True)
    for snapshot, calls in ((old, 1), (start, 10), (end, 14)):
        StatementStat.objects.create(
            snapshot=snapshot, queryid=42, calls=calls, total_exec_time=calls * 2.0, rows=calls
        )

    hour = selectors.slow_queries(window=selectors.WINDOWS["1h"])
    day = selectors.slow_queries(window=selectors.WINDOWS["24h"])

    assert hour["from"] == start.taken_at and hour["covers_full_window"]
    assert [(s["queryid"], s["calls"], s["total_time_ms"]) for s in hour["statements"]] == [(42, 4, 8.0)]
    # Only two hours of snapshots: the day window says it is partial.
    assert day["from"] == old.taken_at and not day["covers_full_window"]
    assert day["statements"][0]["calls"] == 13


@pytest.mark.django_db(transaction=True)
def test_counters_going_backwards_count_from_the_restart() -> None:
    require_statements()
    now = timezone.now()
    start = Snapshot.objects.create(taken_at=now - timedelta(minutes=10), has_statements=True)
    end = Snapshot.objects.create(taken_at=now, has_statements=True)
    StatementStat.objects.create(snapshot=start, queryid=1, calls=100, total_exec_time=500, rows=100)
    StatementStat.objects.create(snapshot=end, queryid=1, calls=3, total_exec_time=6, rows=3)
    StatementText.objects.create(queryid=1, query="SELECT restarted")
    StatementStat.objects.create(snapshot=start, queryid=2, calls=5, total_exec_time=10, rows=5)
    StatementStat.objects.create(snapshot=end, queryid=2, calls=5, total_exec_time=10, rows=5)

    slow = selectors.slow_queries(window=FIVE_MINUTES)

    by_id = {s["queryid"]: s for s in slow["statements"]}
    assert by_id[1]["calls"] == 3 and by_id[1]["counters_restarted"]
    assert 2 not in by_id  # not called in the window
    assert all(s["calls"] > 0 and s["total_time_ms"] >= 0 for s in slow["statements"])


@pytest.mark.django_db(transaction=True)
def test_a_reset_between_snapshots_is_reported() -> None:
    require_statements()
    now = timezone.now()
    start = Snapshot.objects.create(
        taken_at=now - timedelta(minutes=10), has_statements=True, statements_reset_at=now - timedelta(days=3)
    )
    end = Snapshot.objects.create(taken_at=now, has_statements=True, statements_reset_at=now - timedelta(minutes=2))
    StatementStat.objects.create(snapshot=start, queryid=7, calls=2, total_exec_time=4, rows=2)
    StatementStat.objects.create(snapshot=end, queryid=7, calls=9, total_exec_time=18, rows=9)

    slow = selectors.slow_queries(window=FIVE_MINUTES)

    assert slow["stats_reset_in_window"]
    assert "was reset" in slow["message"]
    assert slow["statements"][0]["calls"] == 9


@pytest.mark.django_db
def test_without_pg_stat_statements_the_panel_says_how_to_enable_it() -> None:
    postgres_only()
    # Inside the test's transaction: rolled back afterwards.
    execute("DROP EXTENSION IF EXISTS pg_stat_statements")

    slow = selectors.slow_queries(window=FIVE_MINUTES)

    assert not slow["available"]
    assert any("CREATE EXTENSION IF NOT EXISTS pg_stat_statements" in step for step in slow["enable_steps"])
    assert slow["statements"] == []


@pytest.mark.django_db(transaction=True)
def test_a_blocked_query_is_listed_with_its_blocker(scratch_tables: list[str]) -> None:
    postgres_only()
    scratch_tables.append("perfhub_blocked")
    execute("CREATE TABLE perfhub_blocked (a integer)")
    holder, waiter = other_connection(), other_connection()
    try:
        holder_pid = holder.info.backend_pid
        waiter_pid = waiter.info.backend_pid
        holder.execute("BEGIN")
        holder.execute("LOCK TABLE perfhub_blocked IN ACCESS EXCLUSIVE MODE")
        thread = threading.Thread(target=lambda: waiter.execute("SELECT count(*) FROM perfhub_blocked"))
        thread.start()
        deadline = time.monotonic() + 10
        blocked: list[dict[str, object]] = []
        while time.monotonic() < deadline and not blocked:
            blocked = [q for q in selectors.long_running_queries() if q["pid"] == waiter_pid]
            time.sleep(0.05)
        holder.execute("ROLLBACK")
        thread.join(timeout=10)
    finally:
        holder.close()
        waiter.close()

    assert blocked, "the waiting query never showed up"
    assert blocked[0]["blocked_by"] == [holder_pid]
    assert blocked[0]["wait_event_type"] == "Lock"
    assert "perfhub_blocked" in str(blocked[0]["query"])


@pytest.mark.django_db
def test_a_sequence_near_its_limit_is_flagged() -> None:
    postgres_only()
    execute("CREATE SEQUENCE perfhub_short_seq MAXVALUE 100")
    execute("SELECT setval('perfhub_short_seq', 90)")
    execute("CREATE TABLE perfhub_small_id (id smallint)")
    execute("CREATE SEQUENCE perfhub_small_id_seq OWNED BY perfhub_small_id.id")
    execute("SELECT setval('perfhub_small_id_seq', 30000)")

    sequences = {s["sequence"]: s for s in selectors.sequences()}

    assert sequences["perfhub_short_seq"]["used_fraction"] == 0.9
    assert sequences["perfhub_short_seq"]["near_limit"]
    # A bigint sequence feeding a smallint column overflows at 32767.
    assert sequences["perfhub_small_id_seq"]["limit"] == 32767
    assert sequences["perfhub_small_id_seq"]["near_limit"]


@pytest.mark.django_db
def test_dead_rows_and_wraparound_margin() -> None:
    postgres_only()
    vacuum = selectors.vacuum_stats()

    wraparound = vacuum["wraparound"]
    assert 0 < wraparound["xid_age"] < wraparound["limit"]
    assert wraparound["margin"] == wraparound["limit"] - wraparound["xid_age"]
    assert {"database_snapshot", "vitals_site"} <= {t["table"] for t in vacuum["tables"]}


@pytest.mark.django_db(transaction=True)
def test_sizes_report_growth_from_the_snapshots(scratch_tables: list[str]) -> None:
    postgres_only()
    scratch_tables.append("perfhub_growing")
    execute("CREATE TABLE perfhub_growing (payload text)")
    snapshot = snapshot_take()
    assert snapshot is not None
    execute("INSERT INTO perfhub_growing SELECT repeat('x', 500) FROM generate_series(1, 2000)")

    sizes = selectors.sizes()

    [growing] = [t for t in sizes["tables"] if t["name"] == "perfhub_growing"]
    assert growing["bytes"] > 1_000_000
    assert growing["growth_bytes"] == growing["bytes"] - snapshot.sizes.get(name="perfhub_growing").bytes
    assert growing["growth_bytes"] > 900_000
    assert sizes["growth_since"] == snapshot.taken_at


@pytest.mark.django_db
def test_connections_pool_hit_ratios_and_their_gauges() -> None:
    postgres_only()
    connections = selectors.connection_stats()
    pool = selectors.pool_stats()
    ratios = selectors.cache_hit_ratios()

    assert connections["by_state"]["active"] >= 1  # this very query
    assert any(row["application"] == "perfhub" for row in connections["by_state_and_application"])
    assert (REGISTRY.get_sample_value("perfhub_db_connections", {"state": "active"}) or 0) >= 1
    if connection.settings_dict["OPTIONS"].get("pool"):
        assert pool["configured"] and pool["in_use"] >= 1 and pool["size"] >= pool["in_use"]
        assert REGISTRY.get_sample_value("perfhub_db_pool_size") == pool["size"]
    else:
        assert pool == {"configured": False, "message": "no pool"}
    assert ratios["tables"] is None or 0 <= ratios["tables"] <= 1


@pytest.mark.django_db(transaction=True)
def test_snapshots_past_retention_are_pruned_and_stats_never_reset() -> None:
    require_statements()
    now = timezone.now()
    old = Snapshot.objects.create(taken_at=now - timedelta(days=3), has_statements=True)
    StatementStat.objects.create(snapshot=old, queryid=1, calls=1, total_exec_time=1, rows=1)
    StatementText.objects.create(queryid=1, query="SELECT only in the old snapshot")
    worker = Snapshot.objects.create(taken_at=now - timedelta(hours=3), has_statements=True)
    on_demand = Snapshot.objects.create(taken_at=now - timedelta(hours=3), has_statements=True, on_demand=True)
    before = execute("SELECT stats_reset FROM pg_stat_statements_info")

    call_command("database_snapshot", stdout=io.StringIO())

    assert not StatementStat.objects.filter(snapshot_id=old.pk).exists()
    assert not StatementText.objects.filter(queryid=1).exists()  # nothing refers to it any more
    # The worker's snapshots serve the 24-hour window; on-demand ones only the short ones.
    remaining = set(Snapshot.objects.values_list("pk", flat=True))
    assert worker.pk in remaining and old.pk not in remaining and on_demand.pk not in remaining
    assert len(remaining) == 2
    assert execute("SELECT stats_reset FROM pg_stat_statements_info") == before
    assert snapshots_prune() == 0


@pytest.mark.django_db(transaction=True)
def test_a_read_takes_a_snapshot_only_when_the_newest_is_older_than_the_window_resolution() -> None:
    postgres_only()
    Snapshot.objects.create(taken_at=timezone.now() - timedelta(minutes=2), has_statements=True)

    selectors.database_stats(window=selectors.WINDOWS["1h"])  # resolution 5 minutes: fresh enough
    assert Snapshot.objects.count() == 1

    stats = selectors.database_stats(window=FIVE_MINUTES)  # resolution 1 minute: stale
    newest = Snapshot.objects.order_by("-taken_at").first()
    assert Snapshot.objects.count() == 2
    assert newest is not None and newest.on_demand
    assert stats["slow_queries"]["to"] == newest.taken_at


def test_the_worker_takes_snapshots_every_five_minutes() -> None:
    jobs = {job.command: job.interval for job in default_jobs()}

    assert jobs["database_snapshot"] == 300
