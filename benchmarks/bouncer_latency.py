"""Job latency and throughput straight to PostgreSQL against through PgBouncer.

    python -m benchmarks.bouncer_latency [--jobs 200] [--repeat 5] [--sends 300] [--backlog 5000]

Latency is from the call to ``send`` to the handler's start, one job at a time, in one
process (its worker running beside the sender). The set-ups, each sent a job in turn:
everything straight to PostgreSQL, with and without prepared statements; the queue object's
pool through PgBouncer in transaction mode (``prepare=False``) with its listener straight to
PostgreSQL (``listen_dsn``); on PgBouncer 1.21+ the same with ``max_prepared_statements =
200`` and ``prepare=True``; and everything through PgBouncer in session mode. Prints the
median latency of each run and the median of those medians, in milliseconds; then, as
throughput, the median over the runs of sends a second (``--sends`` jobs one at a time,
the set-ups taking turns) and of jobs a second that a worker drains from a backlog of
``--backlog`` jobs (inserted in batches beforehand; each set-up's worker alone, in an order
that turns from run to run). Needs the ``pgbouncer`` binary (Debian: apt-get
install pgbouncer), or ``$PGQUEUE_PGBOUNCER``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from tests.integration.pgbouncer import (
    carries_prepared_statements,
    pgbouncer_version,
    running_pgbouncer,
)

from pgqueue import AsyncPgQueue

from .database import fresh_database

_QUEUE = "latency"
_BACKLOG = "backlog"
# Each set-up: where the pool connects, and the queue object's connection options
# ("direct" stands for the DSN straight to PostgreSQL).
_SETUPS: dict[str, tuple[str, dict[str, Any]]] = {
    "direct": ("direct", {}),
    "direct_no_prepare": ("direct", {"prepare": False}),
    "transaction_listen_direct": ("transaction", {"prepare": False, "listen_dsn": "direct"}),
    "transaction_prepared_listen_direct": ("transaction_prepared", {"listen_dsn": "direct"}),
    "session": ("session", {}),
}


class _Run(NamedTuple):
    """One run's figures for each set-up."""

    latency: dict[str, float]  # median seconds from send to handler start
    sends: dict[str, float]  # sends a second, one at a time
    drain: dict[str, float]  # jobs a second that a worker runs from a backlog


async def _measure(
    queues: dict[str, AsyncPgQueue], jobs: int, sends: int, backlog: int, turn: int
) -> _Run:
    """Send ``jobs`` jobs to each queue object in turn, one at a time (so that the machine's
    noise falls on every set-up alike), timing each to its handler's start; then time
    ``sends`` more sends in turn, and a worker draining a backlog of ``backlog`` jobs for
    each (starting at set-up ``turn``)."""
    started = {label: asyncio.Queue[float]() for label in queues}
    for label, pq in queues.items():
        pq.job(_QUEUE)(_handler(started[label]))
        pq.job(_BACKLOG)(_noop)
    latencies: dict[str, list[float]] = {label: [] for label in queues}
    sending = dict.fromkeys(queues, 0.0)
    drain: dict[str, float] = {}
    async with contextlib.AsyncExitStack() as stack:
        for pq in queues.values():
            await stack.enter_async_context(pq)
        workers = [asyncio.create_task(pq.work(poll_interval=2.0)) for pq in queues.values()]
        try:
            for i in range(jobs + 5):  # the first few warm the pools and the listeners
                for label, pq in queues.items():
                    sent = time.perf_counter()
                    await pq.send(_QUEUE, i)
                    began = await asyncio.wait_for(started[label].get(), 30)
                    if i >= 5:
                        latencies[label].append(began - sent)
        finally:
            for pq in queues.values():
                pq.stop_working()
            await asyncio.gather(*workers)
        for i in range(sends):
            for label, pq in queues.items():
                sent = time.perf_counter()
                await pq.send(_BACKLOG, i)
                sending[label] += time.perf_counter() - sent
        labels = list(queues)
        for label in labels[turn % len(labels) :] + labels[: turn % len(labels)]:
            pq = queues[label]
            extra = max(backlog - sends, 0)  # the timed sends are part of the backlog
            for first in range(0, extra, 500):
                batch = range(first, min(first + 500, extra))
                await pq.insert([{"name": _BACKLOG, "data": i} for i in batch])
            began = time.perf_counter()
            await pq.work(queues=[_BACKLOG], until_empty=True, poll_interval=0.1)
            drain[label] = (sends + extra) / (time.perf_counter() - began)
    return _Run(
        latency={label: statistics.median(values) for label, values in latencies.items()},
        sends={label: sends / spent for label, spent in sending.items()},
        drain=drain,
    )


async def _noop(data: Any) -> None:
    return None


def _handler(started: asyncio.Queue[float]) -> Callable[[Any], Awaitable[None]]:
    async def handler(data: Any) -> None:
        started.put_nowait(time.perf_counter())

    return handler


async def main() -> None:
    """Measure and print the medians."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bouncer_latency", description=__doc__
    )
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sends", type=int, default=300, help="timed sends per set-up")
    parser.add_argument("--backlog", type=int, default=5000, help="jobs per drain")
    args = parser.parse_args()
    version = pgbouncer_version()
    newer = carries_prepared_statements(version)
    setups = {
        label: setup for label, setup in _SETUPS.items() if newer or "prepared" not in setup[0]
    }
    runs: list[_Run] = []
    async with fresh_database("bouncer_latency") as dsn:
        with contextlib.ExitStack() as bouncers:
            dsns = {"direct": dsn}
            for name, mode, pool_size, kept in [
                ("transaction", "transaction", 10, 0),
                ("transaction_prepared", "transaction", 10, 200),
                ("session", "session", 40, None),
            ]:
                if name == "transaction_prepared" and not newer:
                    continue
                dsns[name] = bouncers.enter_context(
                    running_pgbouncer(dsn, mode, pool_size, kept if newer else None)
                )
            for run in range(args.repeat):
                queues = {}
                for label, (through, options) in setups.items():
                    given: dict[str, Any] = {
                        k: dsn if v == "direct" else v for k, v in options.items()
                    }
                    queues[label] = AsyncPgQueue(
                        dsns[through], schema=f"l{run}_{label}", maintenance=False, **given
                    )
                runs.append(await _measure(queues, args.jobs, args.sends, args.backlog, run))
    latency = {label: [run.latency[label] * 1000 for run in runs] for label in setups}
    summary = {label: statistics.median(values) for label, values in latency.items()}
    sends = {label: statistics.median(run.sends[label] for run in runs) for label in setups}
    drain = {label: statistics.median(run.drain[label] for run in runs) for label in setups}
    print(
        json.dumps(
            {
                "pgbouncer": version,
                "jobs": args.jobs,
                "sends": args.sends,
                "backlog": args.backlog,
                "runs_ms": {k: [round(v, 3) for v in vs] for k, vs in latency.items()},
                "median_ms": {k: round(v, 3) for k, v in summary.items()},
                "ratio_to_direct": {k: round(v / summary["direct"], 3) for k, v in summary.items()},
                "sends_per_s": {k: round(v) for k, v in sends.items()},
                "sends_ratio_to_direct": {
                    k: round(v / sends["direct"], 3) for k, v in sends.items()
                },
                "runs_drain_jobs_per_s": {k: [round(r.drain[k]) for r in runs] for k in setups},
                "drain_jobs_per_s": {k: round(v) for k, v in drain.items()},
                "drain_ratio_to_direct": {
                    k: round(v / drain["direct"], 3) for k, v in drain.items()
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
