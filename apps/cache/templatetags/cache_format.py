from django import template

register = template.Library()


@register.filter
def percent(ratio: float | None) -> str:
    """0.9234 -> "92.3%"; no ratio (nothing counted yet) -> an em dash."""
    if ratio is None:
        return "—"
    return f"{ratio * 100:.1f}%"
