"""Reads for the ops page and its API."""

from dataclasses import dataclass

from django.conf import settings
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError

from apps.metrics.ops import OpsOverview, ops_overview_read
from apps.metrics.query_insight import ViewInsight, query_insight_views


@dataclass(frozen=True)
class QueryInsightReport:
    sample_rate: float
    nplusone_threshold: int
    views: list[ViewInsight]
    error: str | None = None

    @property
    def sample_percent(self) -> str:
        return f"{self.sample_rate * 100:g}%"


def query_insight_report() -> QueryInsightReport:
    error = None
    try:
        views = query_insight_views()
    except (RedisError, ConnectionInterrupted) as exc:
        views, error = [], f"Query insight could not be read from the cache: {exc}"
    return QueryInsightReport(
        sample_rate=settings.QUERY_SAMPLE_RATE,
        nplusone_threshold=settings.NPLUSONE_THRESHOLD,
        views=views,
        error=error,
    )


@dataclass(frozen=True)
class OpsPanels:
    overview: OpsOverview
    query_insight: QueryInsightReport


def ops_panels() -> OpsPanels:
    """Everything the ops page and its API show."""
    return OpsPanels(overview=ops_overview_read(), query_insight=query_insight_report())
