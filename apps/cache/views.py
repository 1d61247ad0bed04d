from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET
from django_htmx.middleware import HtmxDetails

from apps.cache.selectors import DEFAULT_WINDOW, WINDOWS, cache_stats
from apps.core.permissions import StaffRequest, staff_required

# The page polls its statistics fragment this often while the tab is visible.
POLL_SECONDS = 5


class HtmxStaffRequest(StaffRequest):
    htmx: HtmxDetails


@staff_required
@require_GET
def overview(request: HtmxStaffRequest) -> HttpResponse:
    window = request.GET.get("window", DEFAULT_WINDOW)
    error = None
    if window not in WINDOWS:
        error = f"Unknown window {window!r}: choose one of {', '.join(WINDOWS)}."
        window = DEFAULT_WINDOW
    context = {
        "stats": cache_stats(window=window),
        "windows": list(WINDOWS),
        "window": window,
        "error": error,
        "poll_seconds": POLL_SECONDS,
    }
    template = "cache/overview.html#stats" if request.htmx else "cache/overview.html"
    return render(request, template, context, status=400 if error else 200)
