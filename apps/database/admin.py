"""Snapshots in the admin, read-only: they are a record of what
pg_stat_statements said, and the database page is the way to read them.
Their statement and size rows are not listed (thousands per snapshot)."""

from django.contrib import admin
from django.http import HttpRequest

from apps.database.models import Snapshot


@admin.register(Snapshot)
class SnapshotAdmin(admin.ModelAdmin):
    list_display = ["taken_at", "has_statements", "on_demand", "statements_reset_at"]
    list_filter = ["has_statements", "on_demand"]
    date_hierarchy = "taken_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Snapshot | None = None) -> bool:
        return False
