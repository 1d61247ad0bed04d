"""Breaker semantics: failure rate over a sliding window with a minimum
number of calls, slow calls, half-open trials, state shared through Redis,
and process-local fallback when that Redis is down."""

import logging
import threading
import time
import uuid

import pybreaker
import pytest
from django.test import override_settings
from prometheus_client import REGISTRY

from apps.resilience.breakers import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    Breaker,
    BreakerConfig,
    LoggingListener,
    MetricsListener,
    SharedStore,
    breaker,
)
from tests.helpers import free_port, redis_configured, require


class Boom(Exception):
    pass


def fail() -> None:
    raise Boom("dependency failed")


def ok() -> str:
    return "fine"


def make(config: BreakerConfig, *, name: str | None = None, store: SharedStore | None = None) -> Breaker:
    return Breaker(
        name or f"test-{uuid.uuid4().hex[:8]}",
        config,
        listeners=[LoggingListener(), MetricsListener()],
        store=store or SharedStore(),
    )


def outcomes(b: Breaker, pattern: str) -> None:
    """Run calls: 'f' fails, 's' succeeds."""
    for step in pattern:
        if step == "f":
            with pytest.raises(Boom):
                b.call(fail)
        else:
            assert b.call(ok) == "fine"


def test_opens_on_the_failure_rate_not_on_consecutive_failures() -> None:
    b = make(BreakerConfig(failure_rate=0.5, minimum_calls=6, window_seconds=30))
    # Three failures in a row, but 3 of 6 calls is the threshold only once
    # the sixth call is in: a consecutive-failure breaker with fail_max=3
    # would have opened after the third.
    outcomes(b, "fff")
    assert b.current_state == CLOSED
    outcomes(b, "ss")
    assert b.current_state == CLOSED  # 3 of 5: below the minimum number of calls
    outcomes(b, "s")
    assert b.current_state == CLOSED  # 3 of 6, but the last call succeeded: not evaluated yet
    outcomes(b, "f")
    assert b.current_state == OPEN  # 4 of 7 >= 50%
    status = b.status()
    assert status.window.calls == 7 and status.window.failures == 4
    assert "4 of 7 calls failed" in status.reason and "Boom" in status.reason
    with pytest.raises(pybreaker.CircuitBreakerError, match="is open"):
        b.call(ok)


def test_a_low_failure_rate_never_opens() -> None:
    b = make(BreakerConfig(failure_rate=0.5, minimum_calls=4))
    outcomes(b, "sfssfssfssfs")
    assert b.current_state == CLOSED
    assert b.status().failure_rate == pytest.approx(4 / 12)


def test_failures_older_than_the_window_do_not_count() -> None:
    b = make(BreakerConfig(failure_rate=0.5, minimum_calls=4, window_seconds=1))
    outcomes(b, "fff")
    time.sleep(1.2)  # the window (ten buckets of 0.1 s) has slid past them
    outcomes(b, "ff")
    assert b.current_state == CLOSED
    assert b.status().window.calls == 2


def test_opens_on_the_slow_call_rate() -> None:
    b = make(BreakerConfig(slow_rate=0.5, slow_seconds=0.05, minimum_calls=4))
    for _ in range(3):
        b.call(time.sleep, 0.06)
    assert b.current_state == CLOSED  # 3 calls: under the minimum
    b.call(time.sleep, 0.06)
    assert b.current_state == OPEN
    assert "took 0.05s or longer" in b.status().reason


def test_a_call_given_a_longer_allowance_is_not_slow_within_it() -> None:
    b = make(BreakerConfig(slow_rate=0.5, slow_seconds=0.05, minimum_calls=2))
    for _ in range(3):
        with b.calling(slow_seconds=1.0):
            time.sleep(0.06)
    assert b.current_state == CLOSED
    assert b.status().window.slow == 0
    # Past its own allowance, it is slow.
    for _ in range(2):
        with b.calling(slow_seconds=0.01):
            time.sleep(0.02)
    assert b.status().window.slow == 2
    assert b.current_state == CLOSED  # 2 of 5: under the slow rate
    with b.calling(slow_seconds=0.01):
        time.sleep(0.02)
    assert b.current_state == OPEN


def test_excluded_exceptions_do_not_count_as_failures() -> None:
    b = Breaker("test-excluded", BreakerConfig(minimum_calls=2), exclude=[KeyError], store=SharedStore())

    def missing() -> None:
        raise KeyError("not a dependency failure")

    for _ in range(5):
        with pytest.raises(KeyError):
            b.call(missing)
    assert b.current_state == CLOSED
    assert b.status().window.failures == 0


def test_half_open_lets_a_limited_number_of_trial_calls_through() -> None:
    b = make(BreakerConfig(minimum_calls=2, reset_timeout=0.2, half_open_trials=2))
    outcomes(b, "ff")
    assert b.current_state == OPEN
    time.sleep(0.25)
    with b.calling():  # first trial, still in flight
        assert b.current_state == HALF_OPEN
        # A second trial in flight too: a third caller is turned away.
        with b.calling(), pytest.raises(pybreaker.CircuitBreakerError, match="half-open"):
            b.call(ok)
        assert b.current_state == HALF_OPEN  # one success is not enough
    assert b.current_state == CLOSED
    assert "2 trial call(s) succeeded" in b.status().reason
    assert b.status().window.calls == 0  # the window starts afresh


def test_a_failed_trial_call_opens_again() -> None:
    b = make(BreakerConfig(minimum_calls=2, reset_timeout=0.2, half_open_trials=2))
    outcomes(b, "ff")
    time.sleep(0.25)
    outcomes(b, "f")
    assert b.current_state == OPEN
    assert b.status().reason.startswith("trial call failed: Boom")
    with pytest.raises(pybreaker.CircuitBreakerError):
        b.call(ok)


def test_transitions_are_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    b = make(BreakerConfig(minimum_calls=2), name=name)

    def transitions(to: str) -> float:
        labels = {"breaker": name, "from_state": CLOSED, "to_state": to}
        return REGISTRY.get_sample_value("perfhub_breaker_transitions_total", labels) or 0.0

    with caplog.at_level(logging.WARNING, logger="apps.resilience.breakers"):
        outcomes(b, "ff")
    assert transitions(OPEN) == 1
    assert REGISTRY.get_sample_value("perfhub_breaker_state", {"breaker": name}) == 2
    assert any(f"circuit breaker {name}: closed -> open" in r.getMessage() for r in caplog.records)


def test_two_breakers_share_one_state_through_redis() -> None:
    require(redis_configured(), "shared breaker state needs Redis")
    name = f"test-{uuid.uuid4().hex[:8]}"
    config = BreakerConfig(minimum_calls=4, failure_rate=0.5)
    # Two processes' worth: separate instances, separate local stores.
    first, second = make(config, name=name), make(config, name=name)
    assert first._store.using_redis and second._store.using_redis
    outcomes(first, "ff")
    outcomes(second, "ff")  # the window is shared: 4 of 4 failed
    assert first.current_state == OPEN
    assert second.current_state == OPEN
    with pytest.raises(pybreaker.CircuitBreakerError):
        first.call(ok)
    second.close("reset by the other process")
    assert first.current_state == CLOSED
    assert first.call(ok) == "fine"


def test_only_one_process_records_a_transition() -> None:
    require(redis_configured(), "shared breaker state needs Redis")
    name = f"test-{uuid.uuid4().hex[:8]}"
    config = BreakerConfig(minimum_calls=2)
    first, second = make(config, name=name), make(config, name=name)
    outcomes(first, "ff")
    assert first.current_state == OPEN
    # The second instance sees the failures too but finds the breaker open
    # already: compare-and-set, so no second closed -> open transition.
    assert not second._transition(CLOSED, OPEN, "late")
    labels = {"breaker": name, "from_state": CLOSED, "to_state": OPEN}
    assert REGISTRY.get_sample_value("perfhub_breaker_transitions_total", labels) == 1


def test_bookkeeping_falls_back_to_process_memory_when_redis_is_down(caplog: pytest.LogCaptureFixture) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with override_settings(REDIS_URL=dead):
        store = SharedStore()
        b = make(BreakerConfig(minimum_calls=4), store=store)
        started = time.perf_counter()
        # Bookkeeping never raises: the guarded calls behave as always.
        assert b.call(ok) == "fine"
        outcomes(b, "fff")
        assert b.current_state == OPEN
        assert not store.using_redis  # backed off from the dead Redis
        with pytest.raises(pybreaker.CircuitBreakerError):
            b.call(ok)
        # One connection attempt, not one per call.
        assert time.perf_counter() - started < 2
    assert any("using process-local state" in r.getMessage() for r in caplog.records)


def test_state_survives_the_switch_to_local_memory() -> None:
    require(redis_configured(), "shared breaker state needs Redis")
    store = SharedStore()
    b = make(BreakerConfig(minimum_calls=2), store=store)
    outcomes(b, "ff")
    assert b.current_state == OPEN
    # Redis goes away: the last known state is kept locally.
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"):
        store._redis = None
        with pytest.raises(pybreaker.CircuitBreakerError):
            b.call(ok)
        assert b.current_state == OPEN


def test_the_registry_returns_one_breaker_per_name() -> None:
    assert breaker("webhooks") is breaker("webhooks")
    assert breaker("prometheus").name == "prometheus"
    assert breaker("redis-stream").config.minimum_calls == 3


def test_concurrent_calls_are_counted_without_loss() -> None:
    b = make(BreakerConfig(minimum_calls=1000, window_seconds=30))

    def run() -> None:
        for _ in range(50):
            b.call(ok)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert b.status().window.calls == 200
