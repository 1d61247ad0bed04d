"""Circuit breakers around PerfHub's dependencies.

pybreaker does the state machine. Each breaker here guards one dependency;
while it is open, callers take their fallback path at once instead of
waiting for a timeout on every request.
"""

import logging

import pybreaker

logger = logging.getLogger(__name__)


class LoggingListener(pybreaker.CircuitBreakerListener):
    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: object, new_state: object) -> None:
        old = getattr(old_state, "name", old_state)
        new = getattr(new_state, "name", new_state)
        logger.warning("circuit breaker %s: %s -> %s", cb.name, old, new)


# The beacon stream: when Redis fails, beacons are written straight to the
# database until a trial call after reset_timeout succeeds.
redis_stream = pybreaker.CircuitBreaker(
    fail_max=3, reset_timeout=15, name="redis-stream", listeners=[LoggingListener()]
)
