from html import escape

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.templatetags.static import static
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.core.permissions import StaffRequest, staff_required
from apps.vitals import services
from apps.vitals.collect import SITE_CACHE_SECONDS
from apps.vitals.forms import SiteForm
from apps.vitals.models import Site
from apps.vitals.selectors import sample_rate_attribute, site_get, site_list

SITES_PER_PAGE = 50
WEB_VITALS_SCRIPT = "vendor/web-vitals/web-vitals-6.2.3.attribution.iife.js"
RUM_SCRIPT = "perfhub/rum.js"


def _may_change_sites(request: StaffRequest) -> bool:
    # Staff read every page; changing what browsers may send is for administrators.
    return request.user.is_superuser


@staff_required
@require_GET
def overview(request: StaffRequest) -> HttpResponse:
    # The Web Vitals dashboards will live here; until then, the sites.
    return redirect("vitals:sites")


@staff_required
@require_http_methods(["GET", "POST"])
def sites(request: StaffRequest) -> HttpResponse:
    may_change = _may_change_sites(request)
    form = SiteForm(request.POST if request.method == "POST" else None)
    status = 200
    if request.method == "POST":
        if not may_change:
            raise PermissionDenied("Only administrators can create sites.")
        if form.is_valid():
            data = form.cleaned_data
            try:
                site = services.site_create(
                    name=data["name"],
                    allowed_origins=data["allowed_origins"],
                    sample_rate=data["sample_rate"],
                    retention_days=data["retention_days"],
                    kept_query_params=data["kept_query_params"],
                    route_rules=data["route_rules"],
                )
            except (ValidationError, ValueError) as exc:
                form.add_error(None, _messages_of(exc))
            else:
                messages.success(request, f"Site “{site.name}” created. Paste its snippet into your pages.")
                # Post/Redirect/Get: a reload must not post the form again.
                return redirect("vitals:site", name=site.name)
        status = 400
    page = Paginator(site_list(), SITES_PER_PAGE).get_page(request.GET.get("page"))
    context = {"form": form if may_change else None, "page": page}
    return render(request, "vitals/sites.html", context, status=status)


@staff_required
@require_http_methods(["GET", "POST"])
def site_detail(request: StaffRequest, name: str) -> HttpResponse:
    site = get_object_or_404(site_get(name=name))
    may_change = _may_change_sites(request)
    form = SiteForm(request.POST if request.method == "POST" else None, site=site)
    status = 200
    if request.method == "POST":
        if not may_change:
            raise PermissionDenied("Only administrators can change sites.")
        if form.is_valid():
            data = form.cleaned_data
            try:
                services.site_update(
                    site=site,
                    name=data["name"],
                    allowed_origins=data.get("allowed_origins", site.allowed_origins),
                    sample_rate=data["sample_rate"],
                    retention_days=data["retention_days"],
                    kept_query_params=data["kept_query_params"],
                    route_rules=data["route_rules"],
                )
            except (ValidationError, ValueError) as exc:
                form.add_error(None, _messages_of(exc))
                # The page shows what is stored, not the rejected input.
                site.refresh_from_db()
            else:
                messages.success(
                    request,
                    f"Site “{site.name}” saved. The beacon endpoint applies it within {SITE_CACHE_SECONDS} seconds.",
                )
                return redirect("vitals:site", name=site.name)
        status = 400
    context = {
        "site": site,
        "rules": list(site.route_rules.all()),
        "form": form if may_change else None,
        "snippet": rum_snippet_html(request, site),
        "site_cache_seconds": SITE_CACHE_SECONDS,
    }
    return render(request, "vitals/site_detail.html", context, status=status)


@staff_required
@require_POST
def site_rotate_key(request: StaffRequest, name: str) -> HttpResponse:
    if not _may_change_sites(request):
        raise PermissionDenied("Only administrators can rotate keys.")
    site = get_object_or_404(Site, name=name)
    services.site_rotate_key(site=site)
    if site.is_builtin:
        messages.success(request, "New key for the built-in site. PerfHub's own pages carry it from now on.")
    else:
        messages.success(
            request,
            f"New key for “{site.name}”. Pages with the old key stop reporting within {SITE_CACHE_SECONDS} "
            "seconds: paste the new snippet into them.",
        )
    return redirect("vitals:site", name=site.name)


def rum_snippet_html(request: StaffRequest, site: Site) -> str:
    """The two script tags a site's pages carry, with absolute URLs of the
    hashed static files: they are served with a one-year cache, and a new
    release changes their names."""
    web_vitals = request.build_absolute_uri(static(WEB_VITALS_SCRIPT))
    rum = request.build_absolute_uri(static(RUM_SCRIPT))
    return (
        f'<script src="{escape(web_vitals)}" defer></script>\n'
        f'<script src="{escape(rum)}" data-perfhub-key="{escape(site.public_key)}" '
        f'data-perfhub-sample-rate="{sample_rate_attribute(site.sample_rate)}" defer></script>'
    )


def _messages_of(exc: ValidationError | ValueError) -> list[str]:
    return exc.messages if isinstance(exc, ValidationError) else [str(exc)]
