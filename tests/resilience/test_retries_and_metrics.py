import time

import pytest
import redis
from django.test import Client

from apps.resilience.breakers import breaker
from apps.resilience.retries import retry_idempotent
from tests.helpers import redis_configured

pytestmark = pytest.mark.django_db


def test_transient_errors_are_retried_with_backoff() -> None:
    attempts: list[float] = []

    @retry_idempotent(first_wait=0.05, max_wait=0.2)
    def flaky_read() -> str:
        attempts.append(time.perf_counter())
        if len(attempts) < 3:
            raise redis.ConnectionError("blip")
        return "value"

    assert flaky_read() == "value"
    assert len(attempts) == 3
    # Waits grow: about 0.05 s then 0.1 s, each plus up to 0.05 s of jitter.
    first, second = attempts[1] - attempts[0], attempts[2] - attempts[1]
    assert 0.04 <= first <= 0.2 and 0.09 <= second <= 0.3


def test_the_last_error_is_raised_after_the_last_attempt() -> None:
    calls = 0

    @retry_idempotent(attempts=2, first_wait=0.01)
    def down() -> None:
        nonlocal calls
        calls += 1
        raise redis.TimeoutError("still down")

    with pytest.raises(redis.TimeoutError, match="still down"):
        down()
    assert calls == 2


def test_command_errors_are_not_retried() -> None:
    calls = 0

    @retry_idempotent(first_wait=0.01)
    def wrong() -> None:
        nonlocal calls
        calls += 1
        raise redis.ResponseError("WRONGTYPE")

    with pytest.raises(redis.ResponseError):
        wrong()
    assert calls == 1


def test_breaker_degradation_and_health_metrics_are_exposed(viewer_client: Client, read_token: str) -> None:
    breaker("webhooks").open("test")
    viewer_client.get("/api/v1/performance/health")
    viewer_client.get("/api/v1/performance/resilience")
    response = Client().get("/api/v1/performance/metrics", headers={"Authorization": f"Bearer {read_token}"})
    text = response.content.decode()
    assert response.status_code == 200
    assert 'perfhub_breaker_state{breaker="webhooks"} 2.0' in text
    assert 'perfhub_breaker_transitions_total{breaker="webhooks",from_state="closed",to_state="open"}' in text
    assert 'perfhub_health_check_status{check="breakers"} 1.0' in text
    assert 'perfhub_health_check_latency_seconds{check="database"}' in text
    assert 'perfhub_degradation_mode{mode="database-down"} 0.0' in text
    if redis_configured():
        assert 'perfhub_vitals_stream_backlog{kind="entries"}' in text
