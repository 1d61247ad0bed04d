from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.db.models import QuerySet

from apps.resilience.breakers import CLOSED, BreakerStatus, all_breakers, breaker
from apps.resilience.metrics import DEGRADATION_MODE
from apps.resilience.models import BreakerReset


@dataclass(frozen=True)
class ModeSpec:
    name: str
    title: str
    breakers: tuple[str, ...]
    effect: str
    needs_redis: bool


# DESIGN.md, "Degradation": each mode is on while one of its breakers is not
# closed, and off again once they all are.
MODES = (
    ModeSpec(
        "redis-down",
        "Redis unavailable",
        ("redis-cache", "redis-stream"),
        "The cache is bypassed and beacons are written straight to the database; nothing is lost.",
        needs_redis=True,
    ),
    ModeSpec(
        "database-down",
        "Database unavailable",
        ("database",),
        "Beacons wait in the Redis stream and are written once the database is back; "
        "pages may show cached or incomplete data.",
        needs_redis=False,
    ),
)


@dataclass(frozen=True)
class DegradationMode:
    name: str
    title: str
    active: bool
    since: datetime | None
    reason: str
    effect: str
    breakers: list[str]


def _when(epoch: float) -> datetime | None:
    return datetime.fromtimestamp(epoch, tz=UTC) if epoch else None


def degradation_modes(*, fresh: bool = True) -> list[DegradationMode]:
    """The modes of DESIGN.md with whether each is on, since when and why.
    ``fresh=False`` accepts a state up to a second old (page banners)."""
    modes = []
    for spec in MODES:
        if spec.needs_redis and not settings.REDIS_URL:
            continue
        tripped = []
        for name in spec.breakers:
            record = breaker(name).peek(fresh=fresh)
            if record.state != CLOSED:
                tripped.append((name, record))
        first = min(tripped, key=lambda item: item[1].since) if tripped else None
        DEGRADATION_MODE.labels(mode=spec.name).set(1 if tripped else 0)
        modes.append(
            DegradationMode(
                name=spec.name,
                title=spec.title,
                active=bool(tripped),
                since=_when(first[1].since) if first else None,
                reason=f"breaker {first[0]} {first[1].state}: {first[1].reason}" if first else "",
                effect=spec.effect,
                breakers=list(spec.breakers),
            )
        )
    return modes


def breaker_statuses() -> list[BreakerStatus]:
    return [b.status() for b in all_breakers()]


def breaker_resets_recent(*, limit: int = 20) -> QuerySet[BreakerReset]:
    return BreakerReset.objects.order_by("-created_at")[:limit]


@dataclass(frozen=True)
class ResilienceOverview:
    breakers: list[BreakerStatus]
    modes: list[DegradationMode]


def resilience_overview() -> ResilienceOverview:
    return ResilienceOverview(breakers=breaker_statuses(), modes=degradation_modes())
