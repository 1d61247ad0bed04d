from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from apps.core.permissions import StaffRequest, staff_required
from apps.resilience.health import health_report
from apps.resilience.models import BreakerReset
from apps.resilience.selectors import breaker_resets_recent, resilience_overview
from apps.resilience.services import UnknownBreakers, breakers_reset


@staff_required
@require_GET
def overview(request: StaffRequest) -> HttpResponse:
    report = health_report()
    context = {
        "overview": resilience_overview(),
        "health": report,
        "resets": breaker_resets_recent(),
        "may_reset": request.user.is_superuser,
    }
    # htmx polls the live part of the page every few seconds.
    template = "resilience/overview.html#live" if getattr(request, "htmx", False) else "resilience/overview.html"
    return render(request, template, context)


@staff_required
@require_POST
def breaker_reset(request: StaffRequest, name: str) -> HttpResponse:
    if not request.user.is_superuser:
        raise PermissionDenied("Only administrators reset circuit breakers.")
    try:
        breakers_reset(user=request.user, names=[name], via=BreakerReset.Via.PAGE)
    except UnknownBreakers:
        raise Http404(f"No circuit breaker named {name}.") from None
    messages.success(request, f"Circuit breaker {name} reset to closed.")
    return redirect("resilience:overview")
