from django.contrib import admin

from apps.resilience.models import BreakerReset


@admin.register(BreakerReset)
class BreakerResetAdmin(admin.ModelAdmin):
    list_display = ["created_at", "username", "via", "breakers"]
    list_filter = ["via"]
    readonly_fields = ["created_at", "updated_at", "user", "username", "breakers", "via"]

    def has_add_permission(self, request: object) -> bool:
        return False  # written by resets only

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False
