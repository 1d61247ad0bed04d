"""Sites in the Django admin.

Metric and Rollup are deliberately not registered: raw metrics arrive at
thousands of rows a second and rollups at one row per bucket and dimension
combination, so the admin's changelists (and its COUNT(*) for the paginator)
would be unusably slow, and editing a single raw row or rollup by hand would
break the rule that rollups are a pure function of the raw rows. The
dashboards and the API are the way to read them.
"""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils.text import capfirst

from apps.vitals.collect import SITE_CACHE_SECONDS
from apps.vitals.forms import OriginsField, QueryParamsField
from apps.vitals.models import Rollup, RouteRule, Site
from apps.vitals.normalize import validate_route, validate_route_pattern
from apps.vitals.services import site_rotate_key


class RouteRuleForm(forms.ModelForm):
    class Meta:
        model = RouteRule
        fields = ["position", "pattern", "route"]

    def clean_pattern(self) -> str:
        pattern: str = self.cleaned_data["pattern"]
        try:
            validate_route_pattern(pattern)
        except ValueError as exc:
            raise ValidationError(str(exc), code="invalid") from None
        return pattern

    def clean_route(self) -> str:
        route: str = self.cleaned_data["route"]
        try:
            validate_route(route)
        except ValueError as exc:
            raise ValidationError(str(exc), code="invalid") from None
        return route


class RouteRuleInline(admin.TabularInline):
    model = RouteRule
    form = RouteRuleForm
    ordering = ("position", "id")
    extra = 0


class SiteAdminForm(forms.ModelForm):
    # The same one-per-line fields, and checks, as PerfHub's own site form.
    allowed_origins = OriginsField(
        required=True,
        help_text="One per line, as scheme://host[:port], e.g. https://shop.example.com; a line with just * "
        "accepts any origin.",
    )
    kept_query_params = QueryParamsField(help_text="One name per line; all other query parameters are stripped.")

    class Meta:
        model = Site
        fields = ["name", "allowed_origins", "sample_rate", "retention_days", "kept_query_params"]


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    form = SiteAdminForm
    inlines = [RouteRuleInline]
    list_display = ["name", "is_builtin", "sample_rate", "retention_days", "origins", "route_rule_count", "created_at"]
    list_filter = ["is_builtin"]
    search_fields = ["name", "public_key"]
    readonly_fields = ["public_key", "is_builtin", "created_at", "updated_at"]
    actions = ["rotate_public_key"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Site]:
        return super().get_queryset(request).annotate(route_rule_count=Count("route_rules"))

    def get_readonly_fields(self, request: HttpRequest, obj: Site | None = None) -> list[str]:
        readonly = list(super().get_readonly_fields(request, obj))
        if obj is not None and obj.is_builtin:
            # Its name is how PerfHub finds it; its origin is PerfHub's own.
            readonly += ["name", "allowed_origins"]
        return readonly

    def has_delete_permission(self, request: HttpRequest, obj: Site | None = None) -> bool:
        if obj is not None and obj.is_builtin:
            return False
        return super().has_delete_permission(request, obj)

    @admin.display(description="Allowed origins")
    def origins(self, site: Site) -> str:
        if site.is_builtin:
            return "PerfHub’s own origin"
        return ", ".join(site.allowed_origins) or "none"

    @admin.display(description="Route rules", ordering="route_rule_count")
    def route_rule_count(self, site: Site) -> int:
        return int(getattr(site, "route_rule_count", 0))

    @admin.action(description="Rotate public key", permissions=["change"])
    def rotate_public_key(self, request: HttpRequest, queryset: QuerySet[Site]) -> None:
        rotated = []
        for site in queryset:
            site_rotate_key(site=site)
            rotated.append(site)
        names = ", ".join(site.name for site in rotated)
        self.message_user(
            request,
            f"New public key for {names}. Pages with the old key stop reporting within {SITE_CACHE_SECONDS} seconds.",
            messages.SUCCESS,
        )

    def get_deleted_objects(
        self, objs: Any, request: HttpRequest
    ) -> tuple[list[Any], dict[str, int], set[str], list[Any]]:
        """Counts instead of the admin's list of every related object: a
        site has a rollup row per bucket and dimension combination, and
        listing them all would load every one into memory. Raw metrics are
        not counted: they have no foreign key and leave with their partition."""
        sites = list(objs)
        perms_needed = {str(Site._meta.verbose_name) for site in sites if not self.has_delete_permission(request, site)}
        rules = RouteRule.objects.filter(site__in=sites).count()
        rollups = Rollup.objects.filter(site__in=sites).count()
        to_delete: list[Any] = [f"{capfirst(Site._meta.verbose_name)}: {site}" for site in sites]
        model_count = {
            str(Site._meta.verbose_name_plural): len(sites),
            str(RouteRule._meta.verbose_name_plural): rules,
            str(Rollup._meta.verbose_name_plural): rollups,
        }
        return to_delete, model_count, perms_needed, []
