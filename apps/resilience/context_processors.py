from django.http import HttpRequest

from apps.resilience.selectors import degradation_modes


def degradation(request: HttpRequest) -> dict[str, object]:
    """Active degradation modes for the banner in base.html, for staff only
    (visitors of the login page need not know). Lazy: evaluated only when a
    template renders the banner."""
    user = getattr(request, "user", None)
    if user is None or not (user.is_authenticated and user.is_staff):
        return {}
    return {"degradation_modes": lambda: [m for m in degradation_modes(fresh=False) if m.active]}
