from collections.abc import Callable, Sequence
from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.paginator import Page, Paginator
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.middleware import HtmxDetails

from apps.core.permissions import StaffRequest, staff_required
from apps.database import selectors
from apps.database.forms import ExplainForm
from apps.database.services import ExplainError, explain_run, sqlite_integrity_check, statements_snapshot_if_stale

ROWS_PER_PAGE = 20


class HtmxStaffRequest(StaffRequest):
    """What django-htmx's middleware adds, for the type checker."""

    htmx: HtmxDetails


class _Panels:
    """Each panel of the page: its context from the selectors. One panel is
    rendered alone when htmx polls it, so a refresh reads only its own
    statistics."""

    def __init__(self, request: HtmxStaffRequest, window: selectors.Window) -> None:
        self.request = request
        self.window = window

    def page(self, items: Sequence[Any], param: str) -> Page:
        return Paginator(items, ROWS_PER_PAGE).get_page(self.request.GET.get(param))

    def connections(self) -> dict[str, Any]:
        return {
            "connections": selectors.connection_stats(),
            "pool": selectors.pool_stats(),
            "cache_hit_ratios": selectors.cache_hit_ratios(),
        }

    def slow_queries(self) -> dict[str, Any]:
        statements_snapshot_if_stale(window=self.window)
        slow = selectors.slow_queries(window=self.window)
        return {"slow": slow, "slow_page": self.page(slow["statements"], "slow_queries_page")}

    def activity(self) -> dict[str, Any]:
        return {"long_running": selectors.long_running_queries()}

    def indexes(self) -> dict[str, Any]:
        advice = selectors.index_advice()
        return {"advice": advice, "unused_page": self.page(advice["unused"], "indexes_page")}

    def sizes(self) -> dict[str, Any]:
        sizes = selectors.sizes()
        return {
            "sizes": sizes,
            "tables_page": self.page(sizes["tables"], "sizes_page"),
            "index_sizes_page": self.page(sizes["indexes"], "index_sizes_page"),
        }

    def vacuum(self) -> dict[str, Any]:
        vacuum = selectors.vacuum_stats()
        return {"vacuum": vacuum, "vacuum_page": self.page(vacuum["tables"], "vacuum_page")}

    def sequences(self) -> dict[str, Any]:
        return {"sequences_page": self.page(selectors.sequences(), "sequences_page")}

    def sqlite(self) -> dict[str, Any]:
        stats = selectors.sqlite_stats()
        return {
            "sqlite": stats,
            "sqlite_tables_page": self.page(stats["tables"], "sqlite_page"),
            "sqlite_indexes_page": self.page(stats["indexes"], "sqlite_indexes_page"),
        }


POSTGRESQL_PANELS = ("connections", "slow_queries", "activity", "indexes", "sizes", "vacuum", "sequences")
SQLITE_PANELS = ("sqlite",)


def _window(request: HtmxStaffRequest) -> tuple[selectors.Window, str | None]:
    """The chosen window, or the default with an error for an unknown one:
    the page still shows, with a 400 saying what was wrong (as the API
    answers)."""
    key = request.GET.get("window", selectors.DEFAULT_WINDOW)
    if key in selectors.WINDOWS:
        return selectors.WINDOWS[key], None
    error = f"Unknown window {key!r}: choose one of {', '.join(selectors.WINDOWS)}."
    return selectors.WINDOWS[selectors.DEFAULT_WINDOW], error


def _base_context(request: HtmxStaffRequest, window: selectors.Window) -> dict[str, Any]:
    return {
        "server": selectors.server_info(),
        "window": window,
        "windows": list(selectors.WINDOWS.values()),
        "may_explain": request.user.is_superuser,
        "postgresql_only": selectors.POSTGRESQL_ONLY,
    }


@staff_required
@require_GET
def overview(request: HtmxStaffRequest) -> HttpResponse:
    window, error = _window(request)
    status = 400 if error else 200
    panels = _Panels(request, window)
    names = POSTGRESQL_PANELS if selectors.is_postgresql() else SQLITE_PANELS
    context = {**_base_context(request, window), "error": error}
    wanted = request.GET.get("panel", "")
    if request.htmx and wanted in names:
        producer: Callable[[], dict[str, Any]] = getattr(panels, wanted)
        return render(request, f"database/overview.html#{wanted}", {**context, **producer()}, status=status)
    for name in names:
        context.update(getattr(panels, name)())
    if selectors.is_postgresql():
        context["explain_form"] = ExplainForm() if request.user.is_superuser else None
    return render(request, "database/overview.html", context, status=status)


def _require_admin(request: HtmxStaffRequest, what: str) -> None:
    if not request.user.is_superuser:
        raise PermissionDenied(f"Only administrators can {what}.")


@staff_required
@require_POST
def explain(request: HtmxStaffRequest) -> HttpResponse:
    _require_admin(request, "run EXPLAIN")
    form = ExplainForm(request.POST)
    context: dict[str, Any] = {"explain_form": form, "result": None, "error": None}
    status = 200
    if form.is_valid():
        data = form.cleaned_data
        try:
            context["result"] = explain_run(
                sql=data["sql"].strip() or None,
                queryid=data["queryid"],
                analyze=data["analyze"],
                timeout_ms=data["timeout_ms"],
            )
        except ExplainError as exc:
            context["error"] = str(exc)
            status = 400
    else:
        status = 400
    template = "database/explain.html#result" if request.htmx else "database/explain.html"
    return render(request, template, context, status=status)


@staff_required
@require_POST
def integrity_check(request: HtmxStaffRequest) -> HttpResponse:
    _require_admin(request, "run the integrity check")
    try:
        messages = sqlite_integrity_check()
        error = None
    except ValueError as exc:
        messages, error = [], str(exc)
    context = {"integrity": messages, "integrity_ok": messages == ["ok"], "error": error}
    template = "database/integrity.html#result" if request.htmx else "database/integrity.html"
    return render(request, template, context, status=400 if error else 200)
