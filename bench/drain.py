"""How fast the worker drains the beacon stream into PostgreSQL.

With no worker running, fills the Redis beacon stream with --metrics metric
records (default 1,000,000): realistic beacons of five metrics each, built
by vitals_demo's generator and parsed by the endpoint's own parse_beacon,
spread over the last --days days in arrival order (page views in time order,
a few late ones), one stream entry per beacon as the endpoint appends them.
Then it times the drain done by the real consumer code, StreamConsumer
with metrics_prepare and metrics_write as `manage.py worker` runs it
(the next batch read and prepared while one is written): raw rows, deduplication
and rollups, in one process here, or in --consumers N
`manage.py worker` processes. Afterwards it checks that every metric was
stored once and counted once in the rollups.

    .venv/bin/python bench/drain.py --metrics 200000
    .venv/bin/python bench/drain.py                      # 1,000,000 metrics, a few minutes
    .venv/bin/python bench/drain.py --consumers 2
    .venv/bin/python bench/drain.py --metrics 100000 --profile /tmp/drain.prof
    .venv/bin/python bench/drain.py --days 0.01          # batches merge into rollups

As a yardstick, before the drain the same stream entries are read, decoded
and COPYed, in batches of the same size, into a scratch copy of the raw
table (partitioned and indexed as vitals_metric is): what writing these rows
costs at the least, with nothing else (no deduplication, no rollups). The
drain's rate is reported against that COPY rate.

The bench uses a site "bench-drain" (emptied of the last run's rows, see
site_reset) and FLUSHES the Redis database it is given: give it databases
of its own, and run nothing else on them meanwhile.

The last line printed is one JSON object, {"metrics": …, "seconds": …,
"metrics_per_s": …, "copy_only_metrics_per_s": …, …}. The target is 25,000
metrics/s; the exit status is 0 whether or not it is met, and 1 when the
measurement itself went wrong (a failed write, rows or rollups that do not
add up to the metrics appended, a drain that outlasted --timeout).
"""

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Run as a script, sys.path[0] is bench/: the repository goes first, so that
# `bench` is the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    BASE_DIR,
    INHERITED_ENV_DROPPED,
    BenchError,
    load_average,
    machine_load,
    print_result,
)

TARGET_METRICS_PER_S = 25_000
SITE_NAME = "bench-drain"
SCRATCH_TABLE = "bench_drain_copy"
PIPELINE_ENTRIES = 1000
# The consumer's own default (apps.vitals.stream.StreamConsumer), in stream
# entries; five metrics each here.
DEFAULT_BATCH_SIZE = 10_000

if TYPE_CHECKING:
    from apps.vitals.models import Site


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metrics", type=int, default=1_000_000, help="metrics to append (default: %(default)s)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help="stream entries (beacons of 5 metrics) per read and transaction; one process only "
        "(default: %(default)s, the worker's)",
    )
    parser.add_argument(
        "--consumers",
        type=int,
        default=1,
        help="1: drain in this process; more: run that many `manage.py worker` processes (default: %(default)s)",
    )
    parser.add_argument(
        "--days",
        type=float,
        default=2,
        help="spread the metrics over this many days (default: 2); 0.01 is a quarter of an hour, where "
        "batches merge into the same rollup rows",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed of the generated beacons (default: 1)")
    parser.add_argument("--timeout", type=int, default=1800, help="give up on a drain after this many seconds")
    parser.add_argument("--no-copy", action="store_true", help="skip the COPY yardstick")
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="run the drain under cProfile, print the top costs and write the statistics to FILE",
    )
    parser.add_argument(
        "--database-url",
        default="postgres://postgres@127.0.0.1:5432/perfhub_ingest",
        help="PostgreSQL database, migrated by the bench (default: %(default)s)",
    )
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/9",
        help="Redis database; FLUSHED at the start (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.metrics < 1:
        parser.error("--metrics must be at least 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.consumers < 1:
        parser.error("--consumers must be at least 1")
    if args.consumers > 1 and (args.profile or args.batch_size != DEFAULT_BATCH_SIZE):
        parser.error("--profile and --batch-size need --consumers 1: `manage.py worker` takes neither")
    if not 0 < args.days <= 30:
        parser.error("--days must be above 0 and at most 30")
    if not args.database_url.startswith(("postgres://", "postgresql://")):
        parser.error("--database-url must be a PostgreSQL URL: the bench measures the production path")
    return args


def configure_django(args: argparse.Namespace, data_dir: Path) -> None:
    """Set the environment the workers run with, for this process and the
    `manage.py worker` processes it starts, and set Django up."""
    for name in list(os.environ):
        if name in INHERITED_ENV_DROPPED or name.startswith("OTEL_"):
            del os.environ[name]
    os.environ.update(
        DATABASE_URL=args.database_url,
        REDIS_URL=args.redis_url,
        DJANGO_SETTINGS_MODULE="perfhub.settings",
        PERFHUB_DATA_DIR=str(data_dir),
        DEBUG="False",
        # Instrumented as a deployed worker is (PERFHUB_INSTRUMENT's default).
        PERFHUB_INSTRUMENT="True",
        PERFHUB_LOG_LEVEL="WARNING",
    )
    sys.path.insert(0, str(BASE_DIR))
    import django

    django.setup()


def redis_connection() -> Any:
    import redis
    from django.conf import settings

    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=60)


def site_reset(name: str) -> "Site":
    """The bench's site, created once and emptied before each run.

    1. Its rollups (minute and hour rows, dimension and attribution
       blocks) and raw rows are deleted; the partitions this leaves
       empty are dropped, to be created afresh by the first write, as a new
       day's partition is.
    2. The tables the deletion left dead rows in are rewritten (VACUUM
       FULL): with autovacuum off (as on the machine the bench was written
       on) a million dead rows a run would pile up in the indexes the drain
       writes to, and a plain VACUUM would leave the partitions' statistics
       claiming a few rows in many pages. The planner scales that density
       by the partition's size, so the drain would refill the freed pages
       of a partition it believes nearly empty, which is what makes the
       raw-row lookup read a site's whole partition (see bench/README.md).
    3. The site keeps its id from run to run: statistics gathered on an
       earlier run's rows then still describe it.
    """
    from django.db import connection, transaction

    from apps.vitals.models import AttributionRollup, DimensionRollup, Rollup, Site
    from apps.vitals.partitions import partition_name
    from apps.vitals.services import site_create

    site = Site.objects.filter(name=name).first() or site_create(name=name, allowed_origins=["*"])
    kept = []
    with transaction.atomic(), connection.cursor() as cursor:
        # Blocks left by an earlier run would be merged into, counting its
        # metrics again.
        for model in (Rollup, DimensionRollup, AttributionRollup):
            model.objects.filter(site=site).delete()
        cursor.execute("SELECT DISTINCT day FROM vitals_metric WHERE site_id = %s", [site.pk])
        days = [row[0] for row in cursor.fetchall()]
        # Raw rows have no foreign key to cascade along (apps.vitals.models).
        cursor.execute("DELETE FROM vitals_metric WHERE site_id = %s", [site.pk])
        for day in days:
            cursor.execute("SELECT EXISTS (SELECT 1 FROM vitals_metric WHERE day = %s)", [day])
            if cursor.fetchone()[0]:
                kept.append(partition_name(day))
            else:
                cursor.execute(f"DROP TABLE {partition_name(day)}")
    with connection.cursor() as cursor:
        # Outside the transaction: VACUUM cannot run in one.
        rollup_tables = ["vitals_rollup", "vitals_dimensionrollup", "vitals_attributionrollup"]
        cursor.execute(f"VACUUM FULL {', '.join([*rollup_tables, *kept])}")
    return site


def prepare() -> "Site":
    """Migrate, empty the bench's site and the Redis database."""
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    site = site_reset(SITE_NAME)
    redis_connection().flushdb()
    return site


@dataclass
class Fill:
    entries: int
    days: set[date]
    seconds: float


def fill(site: "Site", args: argparse.Namespace) -> Fill:
    """Append --metrics records to the stream, one entry per beacon encoded
    as the endpoint encodes it (apps.vitals.stream.stream_append), but
    pipelined and without the endpoint's rate limits."""
    from django.utils import timezone

    from apps.vitals.beacon import parse_beacon
    from apps.vitals.management.commands.vitals_demo import COUNTRIES, DEVICE_FACTOR, ROUTES, USER_AGENTS, _pick
    from apps.vitals.management.commands.vitals_demo import Command as Demo
    from apps.vitals.normalize import parse_user_agent
    from apps.vitals.stream import STREAM, encode_beacon

    began = time.perf_counter()
    rng = random.Random(args.seed)
    demo = Demo()
    clients = [(parse_user_agent(ua), weight) for ua, weight in USER_AGENTS]
    releases = [f"2026.{n:02d}.1-bench" for n in range(1, 4)]
    now = timezone.now()
    start = now - timedelta(days=args.days)
    span = (now - start).total_seconds()
    pipe = redis_connection().pipeline(transaction=False)
    appended = entries = 0
    days: set[date] = set()
    next_report = 0.25
    while appended < args.metrics:
        # Arrival order, as the endpoint appends them: page views in time
        # order, most a few seconds old when they arrive, one in fifty up to
        # an hour late (a beacon sent when a tab is finally closed).
        late = rng.random() * (3600 if rng.random() < 0.02 else 60)
        at = max(start, start + timedelta(seconds=appended / args.metrics * span - late))
        release_index = min(int((at - start).total_seconds() / span * len(releases)), len(releases) - 1)
        client = _pick(rng, clients)
        path_template, _, route_factor = rng.choices(ROUTES, weights=[r[1] for r in ROUTES])[0]
        beacon = demo._beacon(
            rng,
            at=at,
            path=path_template.format(n=rng.randint(1, 500)),
            factor=route_factor * DEVICE_FACTOR[client.device_class] * (1 - 0.07 * release_index),
            release=releases[release_index],
            sample_rate=1.0,
        )
        beacon["metrics"] = beacon["metrics"][: args.metrics - appended]
        for serial, metric in enumerate(beacon["metrics"], start=appended):
            # The demo's random tail could repeat; a counter cannot, and a
            # repeated id would be stored once and spoil the count.
            metric["id"] = f"{metric['id'].rsplit('-', 1)[0]}-{serial:013d}"
        parsed = parse_beacon(
            beacon,
            site=site,
            rules=[],
            client=client,
            country=_pick(rng, COUNTRIES),
            referer="",
            received_at=at + timedelta(seconds=5),
        )
        if parsed.errors:
            raise BenchError(f"a generated beacon was refused: {parsed.errors}")
        appended += parsed.accepted
        days.update(record["day"] for record in parsed.records)
        pipe.xadd(STREAM, {"r": encode_beacon(parsed.shared, parsed.own)})
        entries += 1
        if len(pipe) >= PIPELINE_ENTRIES:
            pipe.execute()
        if appended >= next_report * args.metrics:
            print(f"  appended {appended:,} metrics", flush=True)
            next_report += 0.25
    pipe.execute()
    return Fill(entries=entries, days=days, seconds=time.perf_counter() - began)


@dataclass
class CopyRun:
    copy_seconds: float
    read_seconds: float
    rows: int


def copy_yardstick(fill_result: Fill, batch_size: int) -> CopyRun:
    """Read every stream entry (without consuming it), decode it, and COPY
    its rows into a scratch copy of vitals_metric, one transaction per batch
    of entries, the way services._write_postgresql feeds its staging table.
    Only the COPY and the commit are timed."""
    from django.db import connection, transaction

    from apps.vitals.partitions import partition_name
    from apps.vitals.services import COLUMNS
    from apps.vitals.stream import STREAM, decode_records

    client = redis_connection()
    copy_seconds = read_seconds = 0.0
    rows = 0
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {SCRATCH_TABLE}")
        cursor.execute(f"CREATE TABLE {SCRATCH_TABLE} (LIKE vitals_metric INCLUDING ALL) PARTITION BY RANGE (day)")
        for day in sorted(fill_result.days):
            cursor.execute(
                f"CREATE TABLE {partition_name(day).replace('vitals_metric', SCRATCH_TABLE)} "
                f"PARTITION OF {SCRATCH_TABLE} FOR VALUES FROM (%s) TO (%s)",
                [day, day + timedelta(days=1)],
            )
    try:
        low = "-"
        while True:
            began = time.perf_counter()
            entries = client.xrange(STREAM, min=low, count=batch_size)
            if not entries:
                break
            low = "(" + entries[-1][0].decode()
            records = [record for _, fields in entries for record in decode_records(fields[b"r"])]
            copied = time.perf_counter()
            with (
                transaction.atomic(),
                connection.cursor() as cursor,
                connection.wrap_database_errors,
                cursor.cursor.copy(f"COPY {SCRATCH_TABLE} ({', '.join(COLUMNS)}) FROM STDIN") as copy,
            ):
                for record in records:
                    copy.write_row([json.dumps(record[c]) if c == "attribution" else record[c] for c in COLUMNS])
            done = time.perf_counter()
            read_seconds += copied - began
            copy_seconds += done - copied
            rows += len(records)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {SCRATCH_TABLE}")
            # The scratch rows' WAL is flushed now, not in the drain's time.
            cursor.execute("CHECKPOINT")
    return CopyRun(copy_seconds=copy_seconds, read_seconds=read_seconds, rows=rows)


@dataclass
class DrainRun:
    seconds: float
    finished: bool
    cpu_seconds: float | None
    wall_seconds: float
    # Seconds per poll (a few batches, read and written), in this process only.
    batches: list[float] = field(default_factory=list)
    # `manage.py worker` only: steps that failed (and were retried after two
    # seconds), and the error that ended the first one's traceback.
    failed_steps: int | None = None
    first_failure: str | None = None


def drain_here(args: argparse.Namespace) -> DrainRun:
    """The worker's consumer loop (apps/core/management/commands/worker.py),
    in this process, until the stream is empty. Timed from the first read to
    the last commit."""
    from django.db import close_old_connections

    from apps.vitals.services import metrics_prepare, metrics_write
    from apps.vitals.stream import STREAM, StreamConsumer, gc_tuned_for_batches

    consumer = StreamConsumer(
        prepare=lambda records: metrics_prepare(records=records),
        store=lambda batch: metrics_write(batch=batch),
        batch_size=args.batch_size,
        block_ms=100,
    )
    consumer.ensure_group()
    profiler = cProfile.Profile() if args.profile else None
    written = 0
    batches: list[float] = []
    began = finished = time.perf_counter()
    cpu_began = time.process_time()
    deadline = began + args.timeout
    next_report = 0.25
    # As the worker runs its consumer.
    with gc_tuned_for_batches(), profiled(profiler):
        while True:
            close_old_connections()
            polled = time.perf_counter()
            count = consumer.poll()
            gc.collect()  # as the worker does after each poll
            if count:
                written += count
                finished = time.perf_counter()
                batches.append(finished - polled)
                if written >= next_report * args.metrics:
                    print(f"  drained {written:,} metrics", flush=True)
                    next_report += 0.25
            elif consumer.client.xlen(STREAM) == 0:
                break
            if time.perf_counter() > deadline:
                break
    cpu = time.process_time() - cpu_began
    if profiler is not None:
        report_profile(profiler, args.profile)
    ended = time.perf_counter()
    return DrainRun(
        seconds=finished - began if written >= args.metrics else ended - began,
        finished=written >= args.metrics,
        cpu_seconds=cpu,
        wall_seconds=ended - began,
        batches=batches,
    )


@contextmanager
def profiled(profiler: cProfile.Profile | None) -> Iterator[None]:
    if profiler is None:
        yield
        return
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()


def report_profile(profiler: cProfile.Profile, path: str) -> None:
    profiler.dump_stats(path)
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order).print_stats(25)
        print(f"profile, top 25 by {order} (statistics in {path}):")
        print("\n".join(line for line in out.getvalue().splitlines() if line.strip()))


def drain_workers(args: argparse.Namespace, entries: int, workdir: Path) -> DrainRun:
    """Start --consumers `manage.py worker` processes and watch the stream
    until it is empty and nothing is pending. Timed from the group's first
    read (the workers' start-up is not the drain's) to that moment."""
    from apps.vitals.stream import GROUP, STREAM

    client = redis_connection()
    logs = [workdir / f"worker-{n}.log" for n in range(args.consumers)]
    processes: list[subprocess.Popen[bytes]] = []
    spawned = time.perf_counter()
    try:
        for log in logs:
            with log.open("wb") as out:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "manage.py", "worker"],
                        cwd=BASE_DIR,
                        env=dict(os.environ),
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        began = finished = 0.0
        deadline = spawned + args.timeout
        while not finished:
            time.sleep(0.05)
            for process, log in zip(processes, logs, strict=True):
                if process.poll() is not None:
                    raise BenchError(f"a worker exited with {process.returncode}:\n{log.read_text(errors='replace')}")
            groups = [g for g in client.xinfo_groups(STREAM) if g["name"] == GROUP.encode()]
            pending = int(groups[0]["pending"]) if groups else 0
            left = int(client.xlen(STREAM))
            if not began and (pending or left < entries):
                began = time.perf_counter()
            if began and not left and not pending:
                finished = time.perf_counter()
            elif time.perf_counter() > deadline:
                break
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    ended = finished or time.perf_counter()
    failed_steps, first_failure = worker_failures(logs)
    return DrainRun(
        seconds=ended - (began or spawned),
        finished=bool(finished),
        cpu_seconds=None,
        wall_seconds=ended - spawned,
        failed_steps=failed_steps,
        first_failure=first_failure,
    )


def worker_failures(logs: list[Path]) -> tuple[int, str | None]:
    """Steps the workers logged as failed (apps/core/management/commands/
    worker.py retries them), and the last line of the first traceback."""
    count, first = 0, None
    for log in logs:
        lines = log.read_text(errors="replace").splitlines()
        for number, line in enumerate(lines):
            if "beacon stream step failed" not in line:
                continue
            count += 1
            if first is not None:
                continue
            if line.startswith("{"):
                # PERFHUB_LOG_JSON: the traceback is the entry's "exception".
                first = json.loads(line).get("exception", "").strip().rpartition("\n")[2] or None
                continue
            # A plain traceback ends at its first line that is not indented.
            following = lines[number + 2 :]
            ends = [text for text in following if text and not text[0].isspace()]
            first = ends[0] if ends else None
    return count, first


@dataclass
class Stored:
    rows: int
    rollup_samples: int
    rollup_rows: int
    # Samples in the whole-site DimensionRollup blocks, per block size.
    block_samples: dict[int, int]
    stream: int
    dead_letters: int


def stored(site: "Site") -> Stored:
    from django.db import connection

    from apps.vitals.stream import DEAD_LETTERS, STREAM

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM vitals_metric WHERE site_id = %s", [site.pk])
        (rows,) = cursor.fetchone()
        cursor.execute("SELECT coalesce(sum(samples), 0), count(*) FROM vitals_rollup WHERE site_id = %s", [site.pk])
        samples, rollup_rows = cursor.fetchone()
        cursor.execute(
            "SELECT bucket_seconds, sum(samples) FROM vitals_dimensionrollup "
            "WHERE site_id = %s AND dimension = 'site' GROUP BY bucket_seconds",
            [site.pk],
        )
        block_samples = {int(seconds): int(total) for seconds, total in cursor.fetchall()}
    client = redis_connection()
    return Stored(
        rows=int(rows),
        rollup_samples=int(samples),
        rollup_rows=int(rollup_rows),
        block_samples=block_samples,
        stream=int(client.xlen(STREAM)),
        dead_letters=int(client.xlen(DEAD_LETTERS)),
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="perfhub-drain-") as workdir:
        configure_django(args, Path(workdir) / "data")
        try:
            site = prepare()
            print(
                f"filling the stream with {args.metrics:,} metrics over {args.days:g} day(s), no worker running "
                f"({machine_load()})",
                flush=True,
            )
            filled = fill(site, args)
            print(f"filled {filled.entries:,} entries in {filled.seconds:.1f}s", flush=True)
            copied = None
            if not args.no_copy:
                copied = copy_yardstick(filled, args.batch_size)
                print(
                    f"COPY yardstick: {copied.rows:,} rows in {copied.copy_seconds:.1f}s "
                    f"({copied.rows / copied.copy_seconds:,.0f} rows/s; reading and decoding took "
                    f"{copied.read_seconds:.1f}s more)",
                    flush=True,
                )
            how = "in this process" if args.consumers == 1 else f"with {args.consumers} `manage.py worker` processes"
            print(
                f"draining {how}, batches of {args.batch_size} entries (load average {load_average()})",
                flush=True,
            )
            run = drain_here(args) if args.consumers == 1 else drain_workers(args, filled.entries, Path(workdir))
            result = stored(site)
        except BenchError as error:
            print(f"drain.py: error: {error}", file=sys.stderr)
            return 1

    # Unfinished, the rate is that of the rows stored within --timeout.
    rate = result.rows / run.seconds
    met = run.finished and rate >= TARGET_METRICS_PER_S
    copy_rate = copied.rows / copied.copy_seconds if copied else None
    problems = []
    if not run.finished:
        problems.append(f"the drain did not finish within --timeout {args.timeout}s")
    if result.rows != args.metrics:
        problems.append(f"{result.rows} rows stored for {args.metrics} metrics appended")
    if result.rollup_samples != args.metrics:
        problems.append(f"the rollups count {result.rollup_samples} samples for {args.metrics} metrics")
    from apps.vitals.rollups import LEVELS

    if any(result.block_samples.get(seconds, 0) != args.metrics for seconds in LEVELS):
        problems.append(f"the dimension blocks count {result.block_samples} samples for {args.metrics} metrics")
    if result.stream or result.dead_letters:
        problems.append(f"{result.stream} entries left in the stream, {result.dead_letters} dead letters")
    if run.failed_steps:
        print(f"the workers logged {run.failed_steps} failed step(s), retried; the first: {run.first_failure}")
    if run.batches:
        batch_median, batch_max = statistics.median(run.batches), max(run.batches)
        print(f"batches: {len(run.batches)}, median {batch_median:.2f}s, slowest {batch_max:.2f}s")
        if batch_max > 5 * batch_median:
            # The lookup of stored rows went through the wrong index (bench/README.md).
            print(f"uneven: the slowest batch took {batch_max / batch_median:.0f} times the median")
    print(
        f"stored {result.rows:,} rows; rollups: {result.rollup_rows:,} rows holding {result.rollup_samples:,} samples"
        + (f"; consumer CPU {run.cpu_seconds:.1f}s of {run.seconds:.1f}s" if run.cpu_seconds is not None else "")
        + (f"; {run.wall_seconds:.1f}s from the workers' start" if args.consumers > 1 else "")
    )
    for problem in problems:
        print(f"drain.py: error: {problem}", file=sys.stderr)
    print(
        f"drained {result.rows:,} metrics in {run.seconds:.1f}s: {rate:,.0f} metrics/s "
        f"(target >= {TARGET_METRICS_PER_S:,}: {'met' if met else 'NOT met'})"
        + (f"; COPY alone {copy_rate:,.0f} rows/s, ratio {rate / copy_rate:.3f}" if copy_rate else "")
    )
    print_result(
        {
            "metrics": args.metrics,
            "seconds": round(run.seconds, 2),
            "finished": run.finished,
            "metrics_per_s": round(rate),
            "target": TARGET_METRICS_PER_S,
            "target_met": met,
            "copy_only_metrics_per_s": round(copy_rate) if copy_rate else None,
            "ratio_to_copy": round(rate / copy_rate, 3) if copy_rate else None,
            "consumers": args.consumers,
            "batch_size": args.batch_size,
            "entries": filled.entries,
            "rows_stored": result.rows,
            "rollup_samples": result.rollup_samples,
            "rollup_rows": result.rollup_rows,
            "verified": not problems,
            "consumer_cpu_s": round(run.cpu_seconds, 2) if run.cpu_seconds is not None else None,
            "batch_median_s": round(statistics.median(run.batches), 3) if run.batches else None,
            "batch_max_s": round(max(run.batches), 3) if run.batches else None,
            "fill_s": round(filled.seconds, 1),
            "days": args.days,
            "failed_steps": run.failed_steps,
        }
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
