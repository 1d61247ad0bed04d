from datetime import datetime, timedelta

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from apps.core.models import ApiToken

# last_used_at is informative; writing it on every API call would turn each
# read into a write, so it is refreshed at most once per interval.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# When this process last wrote last_used_at, by token digest. A token from
# the token cache (apps/core/token_cache.py) carries the last_used_at the
# database had when it was cached, up to TOKEN_CACHE_SECONDS ago: without
# this, every request in those seconds would write again. Keyed by digest,
# which no other token ever has (an id can come back after a rollback); one
# small entry per token this process has served.
_last_written: dict[str, datetime] = {}


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
    known = [when for when in (token.last_used_at, _last_written.get(token.digest)) if when is not None]
    if not known or now - max(known) > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
        _last_written[token.digest] = now
