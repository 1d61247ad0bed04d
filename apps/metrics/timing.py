"""Per-request accounting of time spent in SQL and cache calls.

The totals live in a context variable so that concurrent requests in one
process (threads under gunicorn's gthread worker, tasks under ASGI) never see
each other's figures. InstrumentationMiddleware opens a ledger per request;
outside a request (management commands, the worker) nothing is recorded.
SQL time is added by the instrumented database cursor (apps.metrics.db.cursor),
which times every query anyway for Prometheus; cache time by the cache
backends (apps.metrics.cache_backends) through timed_cache_call.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class RequestLedger:
    db_seconds: float = 0.0
    db_queries: int = 0
    cache_seconds: float = 0.0
    cache_calls: int = 0
    # Cache methods call one another (get_or_set calls get and add); only the
    # outermost call is timed so no time is counted twice.
    cache_depth: int = 0


_ledger: ContextVar[RequestLedger | None] = ContextVar("perfhub_request_ledger", default=None)


def current_ledger() -> RequestLedger | None:
    return _ledger.get()


@contextmanager
def request_ledger() -> Iterator[RequestLedger]:
    ledger = RequestLedger()
    token = _ledger.set(ledger)
    try:
        yield ledger
    finally:
        _ledger.reset(token)


@contextmanager
def timed_cache_call() -> Iterator[None]:
    ledger = _ledger.get()
    if ledger is None:
        yield
        return
    ledger.cache_depth += 1
    start = time.perf_counter()
    try:
        yield
    finally:
        ledger.cache_depth -= 1
        if ledger.cache_depth == 0:
            ledger.cache_seconds += time.perf_counter() - start
            ledger.cache_calls += 1
