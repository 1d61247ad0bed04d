from datetime import datetime, timedelta

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from apps.vitals.models import Site
from apps.vitals.services import rollups_rebuild


def _moment(value: str) -> datetime:
    """An ISO date/time, or a span back from now such as 6h, 2d or 90m."""
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if value[:-1].isdigit() and value[-1:] in units:
        return timezone.now() - timedelta(**{units[value[-1]]: int(value[:-1])})
    parsed = parse_datetime(value) or parse_datetime(value + "T00:00:00")
    if parsed is None:
        raise CommandError(f"{value!r} is neither an ISO date/time nor a span like 6h, 2d or 90m.")
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed)


class Command(BaseCommand):
    help = "Recompute rollups from raw metrics, for whole hours from --since (to --until, default now)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", required=True, help="ISO date/time, or a span back from now: 6h, 2d, 90m.")
        parser.add_argument("--until", help="ISO date/time or span; default now.")
        parser.add_argument("--site", action="append", help="Site name (repeatable); default every site.")

    def handle(self, *args: object, since: str, until: str | None, site: list[str] | None, **options: object) -> None:
        start = _moment(since)
        end = _moment(until) if until else None
        if end is not None and end <= start:
            raise CommandError("--until must be after --since.")
        sites = Site.objects.all()
        if site:
            sites = sites.filter(name__in=site)
            missing = set(site) - set(sites.values_list("name", flat=True))
            if missing:
                raise CommandError(f"No such site: {', '.join(sorted(missing))}.")
        for each in sites:
            written = rollups_rebuild(site=each, since=start, until=end)
            self.stdout.write(f"{each.name}: {written} rollup row(s) rebuilt from {start:%Y-%m-%d %H:00}.")
