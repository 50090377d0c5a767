"""Run pgqueuer's worker the way ``pgq run`` does: ``pgqueuer.run`` on uvloop.

``pgq run`` itself fails before starting with pgqueuer 1.6.0 and typer 0.29 (its
``--log-level`` option reaches ``setup_fancy_logger`` as a str), so this module calls the
function the command calls, with the same defaults and the same event loop choice.
"""

from __future__ import annotations

import argparse
import asyncio

import pgqueuer

from benchmarks.apps.pgqueuer_app import create

try:
    import uvloop
except ImportError:  # pragma: no cover - pgqueuer depends on uvloop off Windows
    uvloop = None  # type: ignore[assignment]


def main() -> None:
    """Parse ``--batch-size`` and run until SIGTERM."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=10)
    args = parser.parse_args()
    worker = pgqueuer.run(create, batch_size=args.batch_size)
    if uvloop is not None:
        uvloop.run(worker)
    else:
        asyncio.run(worker)


if __name__ == "__main__":
    main()
