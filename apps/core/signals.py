"""Keeps the token cache (apps/core/token_cache.py) from outliving a change.

Signals rather than calls in our services because the changes that matter
are also made by code PerfHub does not own: the admin edits users, deletes
tokens, and deletes users (their tokens go by cascade, each with its own
post_delete).
"""

from typing import Any

from django.contrib.auth.models import User
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from apps.core.models import ApiToken
from apps.core.token_cache import api_tokens_forget


@receiver([post_save, post_delete], sender=ApiToken, dispatch_uid="core.token_cache.token_changed")
def _token_changed(sender: type[ApiToken], instance: ApiToken, created: bool = False, **kwargs: Any) -> None:
    # A token just created cannot be in the cache yet.
    if not created:
        api_tokens_forget([instance.digest])


@receiver(post_save, sender=User, dispatch_uid="core.token_cache.owner_changed")
def _owner_changed(
    sender: type[User], instance: User, created: bool, update_fields: frozenset[str] | None, **kwargs: Any
) -> None:
    # A new user has no tokens; signing in only stamps last_login.
    if created or (update_fields is not None and update_fields <= {"last_login"}):
        return
    api_tokens_forget(ApiToken.objects.filter(user_id=instance.pk).values_list("digest", flat=True))
