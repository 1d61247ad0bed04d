from django.core.management.base import BaseCommand

from apps.cache.services import info_snapshot_take


class Command(BaseCommand):
    help = (
        "Store a snapshot of Redis's INFO counters, so that windowed cache statistics are ready even when nobody "
        "has looked at them lately. Does nothing on the local-memory cache."
    )

    def handle(self, *args: object, **options: object) -> None:
        snapshot = info_snapshot_take()
        if snapshot is None:
            self.stdout.write("The cache is not Redis: nothing to snapshot.")
        else:
            self.stdout.write(f"Snapshot of Redis {snapshot.run_id[:8]} stored.")
