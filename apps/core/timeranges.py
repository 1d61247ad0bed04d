"""Time ranges for dashboards: the presets every page offers, custom ranges,
the previous period to compare with, and the bucket size a range is read at.

Ranges are half-open, [start, end), in UTC. A range's start is rounded down
to its resolution so that it covers whole stored buckets (apps.vitals.rollups
keeps minute, hour and day buckets): "last 28 days" reads 28 whole days plus
today so far, never a partial bucket that would count some metrics twice or
not at all.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.core.exceptions import ValidationError
from django.utils import timezone

MINUTE = 60
HOUR = 3600
DAY = 86400

PRESETS: dict[str, tuple[str, timedelta]] = {
    "1h": ("Last hour", timedelta(hours=1)),
    "24h": ("Last 24 hours", timedelta(hours=24)),
    "7d": ("Last 7 days", timedelta(days=7)),
    "28d": ("Last 28 days", timedelta(days=28)),
}
DEFAULT_PRESET = "24h"
CUSTOM = "custom"
# A year and a bit: longer than any retention a site can set (apps.vitals.models.Site).
MAX_SPAN = timedelta(days=400)


def resolution_for(span: timedelta) -> int:
    """The bucket size, in seconds, that a range of ``span`` is read and
    charted at: about 24 to 400 points per chart, and few rows to merge."""
    if span <= timedelta(hours=6):
        return MINUTE
    if span <= timedelta(days=8):
        return HOUR
    return DAY


def floor_to(moment: datetime, seconds: int) -> datetime:
    """``moment`` rounded down to a multiple of ``seconds`` since the epoch (UTC)."""
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, tz=UTC)


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime
    preset: str = CUSTOM

    @property
    def span(self) -> timedelta:
        return self.end - self.start

    @property
    def resolution(self) -> int:
        return resolution_for(self.span)

    @property
    def label(self) -> str:
        if self.preset in PRESETS:
            return PRESETS[self.preset][0]
        return f"{self.start:%Y-%m-%d %H:%M} – {self.end:%Y-%m-%d %H:%M} UTC"

    def previous(self) -> "TimeRange":
        """The period of the same length just before this one."""
        return TimeRange(start=self.start - self.span, end=self.start, preset=CUSTOM)

    def buckets(self) -> list[datetime]:
        """The start of every bucket of ``resolution`` in the range, oldest first."""
        step = timedelta(seconds=self.resolution)
        starts: list[datetime] = []
        moment = floor_to(self.start, self.resolution)
        while moment < self.end:
            starts.append(moment)
            moment += step
        return starts


def time_range_preset(preset: str, *, now: datetime | None = None) -> TimeRange:
    """The preset range ending now, its start rounded down to whole buckets."""
    if preset not in PRESETS:
        raise ValidationError(f"Unknown range {preset!r}; expected one of {', '.join(PRESETS)} or custom.")
    now = now or timezone.now()
    span = PRESETS[preset][1]
    return TimeRange(start=floor_to(now - span, resolution_for(span)), end=now, preset=preset)


def time_range_custom(start: datetime, end: datetime) -> TimeRange:
    """A range between two moments, its start rounded down to whole buckets."""
    if timezone.is_naive(start) or timezone.is_naive(end):
        raise ValidationError("Custom range bounds need a time zone (UTC is assumed by the forms).")
    if start >= end:
        raise ValidationError("The range must end after it starts.")
    if end - start > MAX_SPAN:
        raise ValidationError(f"The range may span at most {MAX_SPAN.days} days.")
    return TimeRange(start=floor_to(start, resolution_for(end - start)), end=end, preset=CUSTOM)
