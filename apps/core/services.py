from datetime import timedelta

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from apps.core.models import ApiToken

# last_used_at is informative; writing it on every API call would turn each
# read into a write, so it is refreshed at most once per interval.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def api_token_create(*, user: User, name: str, scope: str) -> tuple[ApiToken, str]:
    """Create a token for ``user`` and return it with its secret, which is
    shown once and never stored."""
    if not user.is_staff:
        raise PermissionDenied("Only staff users can create API tokens.")
    if scope == ApiToken.Scope.ADMIN and not user.is_superuser:
        raise PermissionDenied("Only administrators can create admin-scope tokens.")
    secret = ApiToken.generate_secret()
    token = ApiToken.objects.create(
        user=user,
        name=name,
        scope=scope,
        digest=ApiToken.digest_of(secret),
        hint=secret[: len(ApiToken.PREFIX) + 4],
    )
    return token, secret


def api_token_revoke(*, token: ApiToken) -> None:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at", "updated_at"])


def api_token_touch(*, token: ApiToken) -> None:
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
