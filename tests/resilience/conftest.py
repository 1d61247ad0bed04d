from collections.abc import Iterator

import pytest

from apps.resilience.breakers import all_breakers, forget_local_state


@pytest.fixture(autouse=True)
def _closed_breakers() -> Iterator[None]:
    # Breaker state outlives a test (in Redis and in this process): every
    # test starts and ends with PerfHub's breakers closed.
    forget_local_state()
    for item in all_breakers():
        item.close("test set-up")
    yield
    forget_local_state()
    for item in all_breakers():
        item.close("test tear-down")
