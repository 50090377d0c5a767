"""pgqueue for Django: add ``"pgqueue.contrib.django"`` to ``INSTALLED_APPS``.

``from pgqueue.contrib.django import pq`` is the project's queue object (a
:class:`DjangoPgQueue`, configured by ``settings.PGQUEUE``); each installed app's
``jobs.py`` is imported when Django starts, so its ``@pq.job`` handlers are registered;
``manage.py pgqueue_worker`` runs them. A send inside ``transaction.atomic()`` is part of
its transaction. See docs/django.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    import django  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "pgqueue.contrib.django needs its extra: pip install 'pgqueue[django]'"
    ) from exc

from ._queue import DjangoPgQueue, get_queue, stop_queue

if TYPE_CHECKING:
    pq: DjangoPgQueue  # made on first use by __getattr__ below

__all__ = ["DjangoPgQueue", "get_queue", "pq", "stop_queue"]


def __getattr__(name: str) -> Any:
    if name == "pq":  # made on first use, once Django's settings are there
        return get_queue()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
