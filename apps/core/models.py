import hashlib
import secrets

from django.conf import settings
from django.db import models


class TimeStampedModel(models.Model):
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class ApiToken(TimeStampedModel):
    """A bearer token for scripts, Grafana and Prometheus.

    Only the SHA-256 of the secret is stored: the secret is 256 random bits,
    so a fast hash is as safe as a slow one and keeps authentication to one
    indexed lookup. The first characters are kept to tell tokens apart.
    """

    class Scope(models.TextChoices):
        READ = "read", "Read"
        ADMIN = "admin", "Admin"

    PREFIX = "phk_"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    scope = models.CharField(max_length=10, choices=Scope.choices, default=Scope.READ)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    hint = models.CharField(max_length=12, editable=False, help_text="The first characters of the token.")
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=models.Q(scope__in=["read", "admin"]), name="core_apitoken_scope_valid"),
        ]
        indexes = [
            # The tokens page lists a user's tokens, newest first.
            models.Index(fields=["user", "-created_at"], name="core_apitoken_user_created"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.hint}…, {self.scope})"

    @staticmethod
    def generate_secret() -> str:
        return ApiToken.PREFIX + secrets.token_urlsafe(32)

    @staticmethod
    def digest_of(secret: str) -> str:
        return hashlib.sha256(secret.encode()).hexdigest()

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
