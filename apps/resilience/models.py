from django.conf import settings
from django.db import models

from apps.core.models import TimeStampedModel


class BreakerReset(TimeStampedModel):
    """An audit record: who reset which circuit breakers, when, and how."""

    class Via(models.TextChoices):
        API = "api", "API"
        PAGE = "page", "Page"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    # Kept when the user is deleted: the audit trail must outlive accounts.
    username = models.CharField(max_length=150)
    breakers = models.JSONField(default=list)
    via = models.CharField(max_length=8, choices=Via.choices)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The resilience page lists the latest resets.
            models.Index(fields=["-created_at"], name="resilience_reset_created"),
        ]

    def __str__(self) -> str:
        return f"{self.username} reset {', '.join(self.breakers)} via {self.via} at {self.created_at:%Y-%m-%d %H:%M}"
