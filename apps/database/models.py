"""Periodic snapshots of PostgreSQL's cumulative statistics.

pg_stat_statements and the size functions only give totals since the last
reset; a rate over a window ("the slowest queries of the last hour", "this
table grew 2 GB today") is the difference between two snapshots. PerfHub
never resets the extension's counters, because other tools (and other
PerfHub replicas) read them too.
"""

from django.db import models


class Snapshot(models.Model):
    taken_at = models.DateTimeField()
    # pg_stat_statements_info.stats_reset (PostgreSQL 14+): when it changes
    # between two snapshots someone reset the counters, and the later
    # snapshot's totals are the best estimate of the window.
    statements_reset_at = models.DateTimeField(null=True, blank=True)
    # False when pg_stat_statements could not be read; sizes are still kept.
    has_statements = models.BooleanField(default=False)
    # Taken by a stats read between the worker's snapshots, for the short
    # windows; pruned sooner than the worker's (see snapshots_prune).
    on_demand = models.BooleanField(default=False)

    class Meta:
        ordering = ["-taken_at"]
        indexes = [
            # The window lookup (newest snapshot at or before a time) and pruning.
            models.Index(fields=["taken_at"], name="database_snapshot_taken_at"),
        ]

    def __str__(self) -> str:
        return f"snapshot {self.taken_at:%Y-%m-%d %H:%M:%S}"


class StatementStat(models.Model):
    """One pg_stat_statements entry of this database, summed over users and
    top-level/nested execution (the extension keys by user as well)."""

    snapshot = models.ForeignKey(Snapshot, on_delete=models.CASCADE, related_name="statements")
    queryid = models.BigIntegerField()
    calls = models.BigIntegerField()
    total_exec_time = models.FloatField(help_text="Milliseconds, as pg_stat_statements reports them.")
    rows = models.BigIntegerField()

    class Meta:
        constraints = [
            # Also the index the delta computation joins on (snapshot, queryid).
            models.UniqueConstraint(fields=["snapshot", "queryid"], name="database_statementstat_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.queryid} @ {self.snapshot_id}"


class StatementText(models.Model):
    """The normalised text of a statement, kept once rather than in every
    snapshot: the text is most of a row's size and does not change."""

    queryid = models.BigIntegerField()
    query = models.TextField()

    class Meta:
        constraints = [
            # Also the index of the lookups by queryid (slow-query list, EXPLAIN).
            models.UniqueConstraint(fields=["queryid"], name="database_statementtext_queryid"),
        ]

    def __str__(self) -> str:
        return f"{self.queryid}: {self.query[:60]}"


class RelationSize(models.Model):
    """The on-disk size of one table (with TOAST, without indexes) or index."""

    class Kind(models.TextChoices):
        TABLE = "table", "Table"
        INDEX = "index", "Index"

    snapshot = models.ForeignKey(Snapshot, on_delete=models.CASCADE, related_name="sizes")
    kind = models.CharField(max_length=5, choices=Kind.choices)
    schema = models.CharField(max_length=63)
    name = models.CharField(max_length=63)
    bytes = models.BigIntegerField()

    class Meta:
        constraints = [
            # Also the index the growth computation joins on.
            models.UniqueConstraint(fields=["snapshot", "kind", "schema", "name"], name="database_relationsize_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.schema}.{self.name} {self.bytes} B"
