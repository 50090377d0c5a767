"""What the handler registry adds to a worker's start: the milliseconds of its one
transaction (the schema's lock, then one statement for all of the worker's handlers), for
workers of ``--sizes`` handlers, on a schema where another app registered as many (half of
them the same queue names, with other handlers: conflicts to report), against the whole
start of such a worker (``work(until_empty=True)`` with nothing to run). Medians of
``--repeat`` runs, on a throwaway schema of ``--dsn``.

    python -m benchmarks.handler_registry --dsn postgresql://postgres@127.0.0.1/bench
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import uuid
from typing import Any

import psycopg
from psycopg import sql

from pgqueue import PgQueue
from pgqueue._handlers import register_plan, registrations


def _handler(i: int) -> Any:
    def run(data: Any) -> None:
        return None

    run.__qualname__ = f"h{i}"
    return run


def measure(dsn: str, size: int, repeat: int) -> tuple[float, float]:
    """Median milliseconds of the registration and of a whole worker start."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    try:
        with (
            PgQueue(dsn, schema=schema, maintenance=False, app_name="other") as other,
            PgQueue(dsn, schema=schema, maintenance=False, app_name="mine") as mine,
        ):
            for i in range(size):
                other.job(f"q{i * 2}")(_handler(i))
                mine.job(f"q{i}")(_handler(-i))
            other.work(until_empty=True)
            rows = registrations(mine.registry.definitions(), "mine")
            runner = mine._runner
            assert runner is not None
            registering, starting = [], []
            for _ in range(repeat):
                began = time.perf_counter()
                runner.run(register_plan(mine.sql, rows, "bench", False), None, True)
                registering.append((time.perf_counter() - began) * 1000)
                began = time.perf_counter()
                mine.work(until_empty=True)
                starting.append((time.perf_counter() - began) * 1000)
            return statistics.median(registering), statistics.median(starting)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--sizes", default="1,10,100,1000,10000")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("pgqueue").setLevel(logging.ERROR)  # the conflicts are the point
    print("handlers  registration ms  worker start ms")
    for size in (int(s) for s in args.sizes.split(",")):
        registering, starting = measure(args.dsn, size, args.repeat)
        print(f"{size:8d}  {registering:15.1f}  {starting:15.1f}")


if __name__ == "__main__":
    main()
