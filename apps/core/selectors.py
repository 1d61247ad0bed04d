from django.contrib.auth.models import User
from django.db.models import QuerySet

from apps.core.models import ApiToken
from apps.core.token_cache import api_token_remember, cached_api_token


def api_token_for_secret(*, secret: str) -> ApiToken | None:
    """The active token with this secret whose owner may still use it; from
    a few seconds' cache of earlier answers where there is one
    (apps/core/token_cache.py)."""
    if not secret.startswith(ApiToken.PREFIX):
        return None
    digest = ApiToken.digest_of(secret)
    token = cached_api_token(digest)
    if token is not None:
        return token
    token = (
        ApiToken.objects.select_related("user")
        .filter(
            digest=digest,
            revoked_at__isnull=True,
            user__is_active=True,
            user__is_staff=True,
        )
        .first()
    )
    if token is not None:
        api_token_remember(token)
    return token


def api_tokens_visible_to(*, user: User) -> QuerySet[ApiToken]:
    """Administrators see every token; staff see their own."""
    tokens = ApiToken.objects.select_related("user")
    if user.is_superuser:
        return tokens
    return tokens.filter(user=user)
