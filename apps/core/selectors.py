from django.contrib.auth.models import User
from django.db.models import QuerySet

from apps.core.models import ApiToken


def api_token_for_secret(*, secret: str) -> ApiToken | None:
    """The active token with this secret whose owner may still use it."""
    if not secret.startswith(ApiToken.PREFIX):
        return None
    return (
        ApiToken.objects.select_related("user")
        .filter(
            digest=ApiToken.digest_of(secret),
            revoked_at__isnull=True,
            user__is_active=True,
            user__is_staff=True,
        )
        .first()
    )


def api_tokens_visible_to(*, user: User) -> QuerySet[ApiToken]:
    """Administrators see every token; staff see their own."""
    tokens = ApiToken.objects.select_related("user")
    if user.is_superuser:
        return tokens
    return tokens.filter(user=user)
