"""How the Web Vitals pages write numbers, ratings and changes. The browser
test formats the selectors' values with these same functions to compare
what a page shows with what the query layer computed."""

from django import template

from apps.vitals.selectors import UNITS, rating_name

register = template.Library()

# Text and a symbol for each rating, so colour is never the only signal.
RATING_LABELS = {
    "good": ("✓", "Good"),
    "needs-improvement": ("!", "Needs improvement"),
    "poor": ("✕", "Poor"),
}
# Badge classes of perfhub.css.
RATING_BADGES = {"good": "badge-good", "needs-improvement": "badge-warn", "poor": "badge-poor"}


@register.filter
def vital_number(value: float | None, name: str) -> str:
    """The value without its unit: whole milliseconds, CLS to three decimals."""
    if value is None:
        return "–"
    if UNITS.get(name) == "ms":
        return f"{value:,.0f}"
    return f"{value:.3f}"


@register.filter
def vital_value(value: float | None, name: str) -> str:
    """The value with its unit, e.g. "2,310 ms" or "0.052"."""
    number = vital_number(value, name)
    unit = UNITS.get(name, "")
    return f"{number} {unit}" if unit and value is not None else number


@register.filter
def rating_symbol(rating: str | None) -> str:
    return RATING_LABELS.get(rating or "", ("", ""))[0]


@register.filter
def rating_label(rating: str | None) -> str:
    return RATING_LABELS.get(rating or "", ("", "No data"))[1]


@register.filter
def rating_badge(rating: str | None) -> str:
    return RATING_BADGES.get(rating or "", "badge-neutral")


@register.filter
def percent(share: float | None, digits: int = 0) -> str:
    if share is None:
        return "–"
    return f"{share * 100:.{digits}f}%"


@register.filter
def signed_percent(change: float | None) -> str:
    """A relative change as "+12.3%" / "−4.0%"."""
    if change is None:
        return "–"
    sign = "+" if change > 0 else "−" if change < 0 else "±"
    return f"{sign}{abs(change) * 100:.1f}%"


@register.filter
def change_direction(change: float | None) -> str:
    """Every Web Vital is better lower: a rise is worse."""
    if change is None or change == 0:
        return "same"
    return "worse" if change > 0 else "better"


@register.filter
def count(value: float | int | None) -> str:
    """A count or a weighted count, whole, with thousands separators."""
    if value is None:
        return "–"
    return f"{value:,.0f}"


@register.filter
def scaled(value: float, factor: float) -> str:
    """``value × factor`` for SVG geometry: coordinates, never text."""
    return f"{value * factor:.2f}"


@register.filter
def bucket_label(seconds: int) -> str:
    return {60: "minute", 3600: "hour", 86400: "day"}.get(seconds, f"{seconds} s")


@register.filter
def get_item(mapping: dict[str, object], key: str) -> object:
    return mapping.get(key)


@register.filter
def rating_of(value: float | None, name: str) -> str | None:
    return rating_name(name, value)


@register.filter
def rating_fill(rating: str | None) -> str:
    """The SVG fill class of perfhub's vitals.css for a rating."""
    return {"good": "good", "needs-improvement": "warn", "poor": "poor"}.get(rating or "", "none")
