from django import template

register = template.Library()


@register.filter
def percent(value: float | None, digits: int = 1) -> str:
    """0.98765 → "98.8 %"; None (no data yet) → "–"."""
    if value is None:
        return "–"
    return f"{value * 100:.{digits}f} %"


@register.filter
def seconds(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"
