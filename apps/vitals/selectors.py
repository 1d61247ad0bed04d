import logging
from typing import TypedDict

from django.core.cache import cache
from django.db import DatabaseError
from django.db.models import Count, QuerySet

from apps.vitals.models import Site

logger = logging.getLogger(__name__)

# PerfHub's own pages read the built-in site's key on every render; the key
# changes only on rotation, which forgets this entry (see rum_snippet_forget).
RUM_SNIPPET_CACHE_KEY = "vitals:rum-snippet"
RUM_SNIPPET_CACHE_SECONDS = 60


def site_cache_key(public_key: str) -> str:
    """Where the beacon endpoint keeps a shared copy of a site, for use
    while the database is down."""
    return f"perfhub:vitals:site:{public_key}"


class RumSnippet(TypedDict):
    key: str
    sample_rate: str


def site_list() -> QuerySet[Site]:
    """Every site with its number of route rules, in name order (one query
    per page of the list)."""
    return Site.objects.annotate(route_rule_count=Count("route_rules")).order_by("name")


def site_get(*, name: str) -> QuerySet[Site]:
    """The site named ``name`` (empty if none), its route rules prefetched in order."""
    return Site.objects.filter(name=name).prefetch_related("route_rules")


def sample_rate_attribute(rate: float) -> str:
    """The sample rate as rum.js parses it (``parseFloat``): ``repr`` never
    rounds and never uses a locale's decimal comma."""
    return repr(float(rate))


def rum_snippet_builtin() -> RumSnippet | None:
    """The public key and sample rate of the built-in site, for the snippet
    on PerfHub's own pages; None when the site is missing or the database
    cannot be read (the pages then render without the snippet)."""
    try:
        cached = cache.get(RUM_SNIPPET_CACHE_KEY)
    except Exception:
        logger.warning("RUM snippet cache unavailable", exc_info=True)
        cached = None
    if cached is not None:
        # {} remembers that the site is missing, so pages do not ask again.
        return cached or None
    try:
        site = Site.objects.filter(is_builtin=True).only("public_key", "sample_rate").first()
    except DatabaseError:
        # A dashboard page must still render while PostgreSQL is down.
        logger.warning("built-in site unavailable for the RUM snippet", exc_info=True)
        return None
    snippet: RumSnippet | None = (
        RumSnippet(key=site.public_key, sample_rate=sample_rate_attribute(site.sample_rate)) if site else None
    )
    try:
        cache.set(RUM_SNIPPET_CACHE_KEY, snippet or {}, timeout=RUM_SNIPPET_CACHE_SECONDS)
    except Exception:
        logger.warning("RUM snippet cache unavailable", exc_info=True)
    return snippet


def rum_snippet_forget() -> None:
    """Drop the cached snippet of the built-in site, after its key or sample
    rate changed, so PerfHub's pages carry the new one at once."""
    try:
        cache.delete(RUM_SNIPPET_CACHE_KEY)
    except Exception:
        logger.warning("RUM snippet cache unavailable; PerfHub's pages keep the old key for a minute", exc_info=True)
