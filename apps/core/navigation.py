"""The main navigation, in one place.

An entry whose URL name does not resolve belongs to a part of PerfHub that is
not built yet: it is shown as plain text, never as a link to a 404.
"""

from dataclasses import dataclass

from django.urls import NoReverseMatch, reverse


@dataclass(frozen=True)
class NavEntry:
    label: str
    url_name: str


MAIN_NAV = (
    NavEntry("Overview", "core:overview"),
    NavEntry("Vitals", "vitals:overview"),
    NavEntry("Ops", "metrics:ops"),
    NavEntry("Database", "database:overview"),
    NavEntry("Cache", "cache:overview"),
    NavEntry("Resilience", "resilience:overview"),
    NavEntry("Backups", "backups:overview"),
    NavEntry("Alerts", "alerts:overview"),
    NavEntry("API tokens", "core:tokens"),
    NavEntry("API docs", "api-docs"),
    NavEntry("Admin", "admin:index"),
)


def nav_items(current_path: str) -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    for entry in MAIN_NAV:
        try:
            url = reverse(entry.url_name)
        except NoReverseMatch:
            items.append({"label": entry.label, "url": None, "current": False})
            continue
        current = current_path == url if url == "/" else current_path.startswith(url)
        items.append({"label": entry.label, "url": url, "current": current})
    return items
