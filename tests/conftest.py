from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.harness import Harness, ensure_server_database, make_harness


@pytest.fixture(scope="session", autouse=True)
def _server_database() -> None:
    """Under pytest-xdist, this worker's own PostgreSQL database exists before any test."""
    asyncio.run(ensure_server_database())


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = await make_harness(tmp_path)
    yield harness
    await harness.app.close()
