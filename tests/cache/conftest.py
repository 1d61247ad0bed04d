"""A private redis-server per test that needs to control Redis itself: its
INFO counters (the shared server's count everyone's traffic) or its death.
Never the shared server on 6379."""

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from django.test import override_settings

from tests.helpers import free_port, require_tool, wait_for_port


@dataclass
class PrivateRedis:
    url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def redis_cache_settings(url: str) -> dict[str, dict[str, object]]:
    return {
        "default": {
            "BACKEND": "apps.metrics.cache_backends.RedisCache",
            "LOCATION": url,
            "KEY_PREFIX": "perfhub",
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                "SOCKET_CONNECT_TIMEOUT": 0.5,
                "SOCKET_TIMEOUT": 0.5,
            },
        }
    }


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server of this test's own, which the default cache points at."""
    with running_private_redis() as redis:
        yield redis


@contextmanager
def running_private_redis() -> Iterator[PrivateRedis]:
    server = require_tool("redis-server")
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        process = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        redis = PrivateRedis(url=f"redis://127.0.0.1:{port}/0", process=process)
        try:
            wait_for_port(port, timeout=10)
            with override_settings(CACHES=redis_cache_settings(redis.url)):
                yield redis
        finally:
            redis.stop()
