from datetime import timedelta

from django.core.management.base import BaseCommand
from django.utils import timezone

from apps.vitals.partitions import ensure_partitions
from apps.vitals.services import metrics_drop_expired, rollups_compact

# Partitions exist this many days ahead, so a write never has to create one.
DAYS_AHEAD = 3


class Command(BaseCommand):
    help = "Create raw-metric partitions ahead, apply retention, fold old minute rollups into hours."

    def handle(self, *args: object, **options: object) -> None:
        today = timezone.now().date()
        created = ensure_partitions(today + timedelta(days=n) for n in range(DAYS_AHEAD + 1))
        expired = metrics_drop_expired()
        folded = rollups_compact()
        self.stdout.write(
            f"partitions created: {len(created)}, partitions dropped: {expired['partitions_dropped']}, "
            f"expired rows deleted: {expired['rows_deleted']}, minute rollups folded into hours: {folded}"
        )
