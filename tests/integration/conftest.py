"""Fixtures of the integration tests that several modules share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from .dashboard_world import make_world


@pytest.fixture
async def world(
    dsn: str, schema: str, conn: psycopg.Connection[Any]
) -> AsyncIterator[dict[str, Any]]:
    """A queue object with registered jobs, and one job in most states (dashboard tests)."""
    async for found in make_world(dsn, schema, conn):
        yield found
