"""Two workers writing at once, on PostgreSQL: each inserts its raw rows
without the site's lock and writes the rollups under it, they take turns to
create a partition, and what one worker stores is never counted twice by
the other. Each worker is a thread with its own
database connection; the test holds one worker's transaction open and reads
what the other is waiting for from pg_stat_activity."""

import threading
import time
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest
from django.db import connection, connections, transaction
from django.db.models import Sum

from apps.vitals.beacon import REPORTED_BEFORE
from apps.vitals.models import Metric, Rollup, Site
from apps.vitals.partitions import ensure_partitions, existing_partitions, forget_known_partitions, partition_name
from apps.vitals.services import StoreResult, metrics_prepare, metrics_write
from tests.helpers import require
from tests.vitals.test_store import NOW, record

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _postgresql() -> None:
    require(connection.vendor == "postgresql", "the site lock and partitions are PostgreSQL's")


class Worker(threading.Thread):
    """Runs ``work`` on its own connection; with ``hold``, inside a
    transaction that stays open until ``release`` is set."""

    def __init__(self, work: Callable[[], Any], *, hold: bool = False) -> None:
        super().__init__(daemon=True)
        self.work, self.hold = work, hold
        self.backend_pid: int | None = None
        self.started_work = threading.Event()
        self.done_work = threading.Event()
        self.release = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            connection.ensure_connection()
            self.backend_pid = connection.connection.info.backend_pid
            self.started_work.set()
            with transaction.atomic():
                self.result = self.work()
                self.done_work.set()
                if self.hold:
                    assert self.release.wait(30), "the test never released this worker"
        except BaseException as error:  # reported by finish()
            self.error = error
        finally:
            self.done_work.set()
            connections.close_all()

    def finish(self) -> Any:
        self.release.set()
        self.join(30)
        assert not self.is_alive(), "worker still running"
        if self.error is not None:
            raise self.error
        return self.result


def waits_for(worker: Worker, wait_event: str) -> bool:
    """Whether ``worker``'s backend is waiting on a lock of that kind
    ('advisory': a site's lock or the partition creation lock;
    'transactionid': another's uncommitted row)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT wait_event_type, wait_event FROM pg_stat_activity WHERE pid = %s", [worker.backend_pid])
        row = cursor.fetchone()
    return row == ("Lock", wait_event)


def wait_until_waiting(worker: Worker, wait_event: str) -> None:
    assert worker.started_work.wait(10)
    deadline = time.monotonic() + 20
    while not waits_for(worker, wait_event):
        assert not worker.done_work.is_set(), f"the worker finished without waiting: {worker.error!r}"
        assert time.monotonic() < deadline, f"the worker never waited on a {wait_event} lock"
        time.sleep(0.02)


def write(records: list[dict[str, Any]]) -> Callable[[], StoreResult]:
    batch = metrics_prepare(records=records)
    return lambda: metrics_write(batch=batch)


def samples(site: Site) -> int:
    return int(Rollup.objects.filter(site=site).aggregate(total=Sum("samples"))["total"] or 0)


@pytest.fixture
def site() -> Site:
    # The day's partition exists (committed), as the worker makes them ahead:
    # creating it would take a lock of its own (see the last test).
    ensure_partitions([NOW.date()])
    return Site.objects.create(name="shop", allowed_origins=["*"])


def first(site: Site, n: int, **fields: Any) -> dict[str, Any]:
    return {**record(site, n, value=fields.pop("value", 1000.0), **fields), REPORTED_BEFORE: False}


def test_a_worker_inserts_its_raw_rows_while_another_holds_the_site_lock(site: Site) -> None:
    holder = Worker(write([first(site, n) for n in range(5)]), hold=True)
    holder.start()
    assert holder.done_work.wait(30) and holder.error is None
    other = Worker(write([first(site, n) for n in range(5, 10)]))
    other.start()
    wait_until_waiting(other, "advisory")
    # Waiting for the site lock, the other worker has COPYed its rows already:
    # its backend holds the write lock of the day's partition.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE pid = %s AND granted AND mode = 'RowExclusiveLock' "
            "AND relation = %s::regclass",
            [other.backend_pid, partition_name(NOW.date())],
        )
        assert cursor.fetchone() == (1,)
    assert holder.finish().inserted == 5
    assert other.finish().inserted == 5
    assert Metric.objects.filter(site=site).count() == 10
    # Both merged into the same hour's rollup, the second adding to the first.
    rollup = Rollup.objects.get(site=site)
    assert (rollup.samples, rollup.value_sum) == (10, 10_000.0)


def test_a_metric_delivered_to_two_workers_at_once_is_stored_and_counted_once(site: Site) -> None:
    holder = Worker(write([first(site, 1)]), hold=True)
    holder.start()
    assert holder.done_work.wait(30) and holder.error is None
    # The same first report again (a stream entry delivered twice): its COPY
    # waits for the holder's uncommitted row, then is refused, and the
    # metric is found stored.
    other = Worker(write([first(site, 1), first(site, 2)]))
    other.start()
    wait_until_waiting(other, "transactionid")
    assert holder.finish().inserted == 1
    result = other.finish()
    assert (result.inserted, result.unchanged) == (1, 1)
    assert Metric.objects.filter(site=site).count() == 2
    assert samples(site) == 2


def test_a_later_report_waits_for_the_first_and_replaces_its_value(site: Site) -> None:
    holder = Worker(write([first(site, 1, value=1000.0)]), hold=True)
    holder.start()
    assert holder.done_work.wait(30) and holder.error is None
    # Reported before: inserted only if not stored, which waits for the
    # holder's uncommitted row; then read and replaced under the lock.
    later = record(site, 1, value=3000.0)
    other = Worker(write([later]))
    other.start()
    wait_until_waiting(other, "transactionid")
    holder.finish()
    assert other.finish().replaced == 1
    assert Metric.objects.get(site=site).value == 3000.0
    rollup = Rollup.objects.get(site=site)
    assert (rollup.samples, rollup.value_sum) == (1, 3000.0)


def test_two_workers_creating_the_same_partition_take_turns() -> None:
    day = date(2099, 1, 1)
    assert day not in existing_partitions()
    try:
        holder = Worker(lambda: ensure_partitions([day]), hold=True)
        holder.start()
        assert holder.done_work.wait(30) and holder.error is None
        # Before the holder commits, another process does not know the
        # partition (this one remembers it only once committed).
        other = Worker(lambda: ensure_partitions([day]))
        other.start()
        wait_until_waiting(other, "advisory")
        assert holder.finish() == [day]
        assert other.finish() == []  # it looked again once it was its turn
        assert day in existing_partitions()
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {partition_name(day)}")
        forget_known_partitions()


def test_a_first_and_a_later_report_in_two_waiting_batches_do_not_deadlock(site: Site) -> None:
    # A third worker holds the site lock while a first report is inserted
    # (its worker then waits for the lock) and a later report of the same
    # metric waits for that insert. Were the later report inserted under the
    # lock, whichever got the lock first would decide: the later report's
    # worker would wait for the first's row while holding the lock the
    # first's worker waits for.
    holder = Worker(write([first(site, 9)]), hold=True)
    holder.start()
    assert holder.done_work.wait(30) and holder.error is None
    first_report = Worker(write([first(site, 1, value=1000.0)]))
    first_report.start()
    wait_until_waiting(first_report, "advisory")
    later_report = Worker(write([record(site, 1, value=3000.0)]))
    later_report.start()
    wait_until_waiting(later_report, "transactionid")
    holder.finish()
    assert first_report.finish().inserted == 1
    assert later_report.finish().replaced == 1
    assert Metric.objects.get(site=site, pageview="pv-1").value == 3000.0
    assert samples(site) == 2
