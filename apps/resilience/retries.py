"""Retries for idempotent operations, with exponential backoff and jitter.

Only for reads and other operations that may safely run twice (Redis INFO,
XLEN, a probe key written and read back, a PromQL query). Never for XADD, an
INSERT or a webhook POST: a retry after a timeout may repeat an operation
that did succeed.
"""

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import redis
from django_redis.exceptions import ConnectionInterrupted
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

P = ParamSpec("P")
T = TypeVar("T")

# Connection-level failures of Redis: a blip worth a second try. A command
# error (wrong type, no such group) would fail again and is not retried.
REDIS_TRANSIENT: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError, ConnectionInterrupted)


def retry_idempotent(
    *,
    on: tuple[type[BaseException], ...] = REDIS_TRANSIENT,
    attempts: int = 3,
    first_wait: float = 0.05,
    max_wait: float = 0.4,
) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Decorator: up to ``attempts`` tries, waiting about first_wait, then
    twice that, and so on (capped at max_wait), each plus up to first_wait of
    random jitter so that many processes do not retry in step. The last error
    is re-raised as it was."""
    decorator: Any = retry(
        retry=retry_if_exception_type(on),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential_jitter(multiplier=first_wait, max=max_wait, jitter=first_wait),
        reraise=True,
    )
    return decorator
