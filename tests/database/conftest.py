from collections.abc import Iterator

import pytest

from tests.database.helpers import execute


@pytest.fixture
def scratch_tables() -> Iterator[list[str]]:
    """Tables a test creates outside Django's models, dropped afterwards
    (transaction=True tests commit them)."""
    names: list[str] = []
    yield names
    for name in names:
        execute(f"DROP TABLE IF EXISTS {name}")
