"""The shop's fixtures. pgqueue's plugin gives ``pgqueue_aqueue``: the application's queue
object (``pgqueue_app = "shop.app:pq"`` in pyproject.toml) started on a fresh schema."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shop.app import payments


@pytest.fixture(autouse=True)
def provider_up() -> Iterator[None]:
    payments.up = True
    payments.charged.clear()
    yield
    payments.up = True
