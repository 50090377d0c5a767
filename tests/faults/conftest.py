"""Fixtures of the fault suite: a cluster of worker processes on the test's schema."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.conftest import restartable_server  # noqa: F401  (a fixture)
from tests.faults.harness import Cluster


@pytest.fixture
def cluster(dsn: str, schema: str) -> Iterator[Cluster]:
    with tempfile.TemporaryDirectory() as out:
        group = Cluster(dsn, schema, Path(out))
        try:
            yield group
        finally:
            for proc in group.live():
                proc.kill()
                proc.wait(30)
