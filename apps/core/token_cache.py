"""A few seconds' memory of API token lookups, so that a poller's requests
do not each query the database to authenticate.

Authentication looks a token up by the SHA-256 of its secret, with its
owner, on every API request: a query that cost more than half of a cached
stats answer (bench/cache.py). This keeps what that lookup found in the
shared cache for ``TOKEN_CACHE_SECONDS``:

1. **What is kept.** The token's own row (no secret in it: the digest is
   what the database stores too) and of its owner only the id, username and
   the three flags access depends on (active, staff, superuser); never the
   password hash or anything else. The owner's other fields stay deferred
   and load from the database if some code reads them.
2. **Only in a cache every process shares.** On the local-memory cache of
   the embedded default each process would keep its own copy, and a
   revocation in one could not reach the others: there, every lookup goes
   to the database as before.
3. **Changes take effect at once.** Revoking or deleting a token, and any
   change to its owner (made through ``save()`` or ``delete()``, as the
   admin and PerfHub's own services do), replace the entry with a
   tombstone, and a lookup adds an entry only where none is (``cache.add``).
   A plain delete would leave a race: a request that read the token from
   the database just before the change commits could write it back just
   after. The tombstone outlives such a request by far
   (``TOMBSTONE_SECONDS``); while it stands, lookups of that token go to the
   database. Bulk ``QuerySet.update()`` calls send no signal: the few
   writes of that kind take effect within ``TOKEN_CACHE_SECONDS``.
4. **Only positive answers are kept.** An unknown, revoked or orphaned
   secret is looked up in the database every time, as before.
5. **When the cache fails**, the lookup goes to the database (the Redis
   cache answers a miss while its circuit breaker is open; an error from
   any other backend is logged and taken as a miss). A revocation made
   while Redis is unreachable cannot write its tombstone; an entry it
   missed expires within ``TOKEN_CACHE_SECONDS``.
"""

import logging
from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import User
from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache
from django.db.models import Model

from apps.core.models import ApiToken

logger = logging.getLogger(__name__)

KEY_PREFIX = "perfhub:core:token"
# Long enough for every poller to gain (one query per token every few
# seconds instead of one per request), short enough that a change made
# where no signal is sent (point 3) lasts only moments.
TOKEN_CACHE_SECONDS = 5
# Far longer than a request takes between reading a token and caching it.
TOMBSTONE_SECONDS = 60
TOMBSTONE = "gone"

# Access depends on these (apps.core.selectors, apps.core.permissions, the
# response cache's permission class); whoami shows the username.
_USER_FIELDS = ("id", "username", "is_active", "is_staff", "is_superuser")


def token_cache_key(digest: str) -> str:
    return f"{KEY_PREFIX}:{digest}"


def _shared_cache() -> BaseCache | None:
    """The default cache when every process sees the same one (point 2)."""
    cache = caches[DEFAULT_CACHE_ALIAS]
    return None if isinstance(cache, LocMemCache | DummyCache) else cache


def _fields(instance: Model, names: Iterable[str]) -> dict[str, Any]:
    return {name: getattr(instance, name) for name in names}


def _instance(model: type[Model], fields: dict[str, Any]) -> Any:
    """A model instance as the database would have loaded it, with the fields
    that were not kept deferred (Model.from_db wants them in field order)."""
    names = [field.attname for field in model._meta.concrete_fields if field.attname in fields]
    return model.from_db(model._default_manager.db, names, [fields[name] for name in names])


def cached_api_token(digest: str) -> ApiToken | None:
    """The token the database answered for this digest a moment ago, with
    its owner; None when there is no entry (or a tombstone)."""
    cache = _shared_cache()
    if cache is None:
        return None
    try:
        entry = cache.get(token_cache_key(digest))
    except Exception:
        logger.warning("token cache unavailable; looking the token up in the database", exc_info=True)
        return None
    if not isinstance(entry, dict):
        return None
    token: ApiToken = _instance(ApiToken, entry["token"])
    token.user = _instance(User, entry["user"])
    return token


def api_token_remember(token: ApiToken) -> None:
    """Keep a token just read from the database, unless an entry or a
    tombstone is already there (point 3)."""
    cache = _shared_cache()
    if cache is None:
        return
    entry = {
        "token": _fields(token, (field.attname for field in ApiToken._meta.concrete_fields)),
        "user": _fields(token.user, _USER_FIELDS),
    }
    try:
        cache.add(token_cache_key(token.digest), entry, timeout=TOKEN_CACHE_SECONDS)
    except Exception:
        logger.warning("token cache unavailable; token lookup not kept", exc_info=True)


def api_tokens_forget(digests: Iterable[str]) -> None:
    """Tombstone these tokens' entries: their next lookups read the database."""
    cache = _shared_cache()
    if cache is None:
        return
    keys = {token_cache_key(digest): TOMBSTONE for digest in digests}
    if not keys:
        return
    try:
        cache.set_many(keys, timeout=TOMBSTONE_SECONDS)
    except Exception:
        # Point 5: an entry this could not replace expires within seconds.
        logger.warning("token cache unavailable; %d token entries left to expire", len(keys), exc_info=True)
