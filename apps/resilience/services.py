from django.contrib.auth.models import AnonymousUser, User

from apps.resilience.breakers import Breaker, all_breakers
from apps.resilience.models import BreakerReset


class UnknownBreakers(ValueError):
    def __init__(self, names: list[str]) -> None:
        self.names = names
        super().__init__(f"unknown breaker(s): {', '.join(names)}")


def breakers_reset(*, user: User | AnonymousUser, names: list[str] | None, via: str) -> list[Breaker]:
    """Close the named breakers (all when ``names`` is None or empty) and
    record who did it. Raises UnknownBreakers naming every unknown name,
    before resetting any."""
    known = {b.name: b for b in all_breakers()}
    wanted = list(dict.fromkeys(names)) if names else sorted(known)
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise UnknownBreakers(unknown)
    username = user.get_username() if user.is_authenticated else ""
    for name in wanted:
        known[name].close(f"reset by {username or 'an administrator'}")
    BreakerReset.objects.create(
        user=user if user.is_authenticated else None, username=username, breakers=wanted, via=via
    )
    return [known[name] for name in wanted]
