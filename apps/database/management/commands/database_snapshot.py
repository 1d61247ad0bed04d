from django.core.management.base import BaseCommand

from apps.database.selectors import connection_stats, pool_stats
from apps.database.services import snapshot_take, snapshots_prune


class Command(BaseCommand):
    help = (
        "Snapshot pg_stat_statements and relation sizes (the slow-query windows and size growth are "
        "differences between snapshots) and prune snapshots past their retention. Never resets the counters."
    )

    def handle(self, *args: object, **options: object) -> None:
        snapshot = snapshot_take()
        pruned = snapshots_prune()
        if snapshot is None:
            self.stdout.write("Nothing to snapshot: pg_stat_statements and relation sizes are PostgreSQL-only.")
            return
        # Refresh the connection and pool gauges even when nobody reads the page.
        connection_stats()
        pool_stats()
        self.stdout.write(
            f"Snapshot {snapshot.pk} at {snapshot.taken_at:%Y-%m-%d %H:%M:%S}: "
            f"{snapshot.statements.count()} statement(s), {snapshot.sizes.count()} relation(s)"
            f"{'' if snapshot.has_statements else ' (pg_stat_statements not available)'}; "
            f"{pruned} old snapshot(s) pruned."
        )
