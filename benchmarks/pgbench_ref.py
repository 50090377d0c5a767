"""Physical references: what PostgreSQL itself does with a minimal job table (pgbench).

(a) one INSERT per transaction, 1 client: the ceiling for W1.
(b) drain only: claim 100 preloaded jobs with SKIP LOCKED, complete them; 4 clients: W3's.
(c) the whole life, batched: insert 100, claim 100, complete; 4 clients.
jobs/s counts completed jobs for (b) and (c), inserted ones for (a).
"""

from __future__ import annotations

import asyncio
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .database import fresh_database, scalar
from .stats import Summary
from .workloads.base import Context, Measurement

ID = "REF"
TITLE = "pgbench references"
SCRIPTS = Path(__file__).resolve().parent / "pgbench"
_TPS = re.compile(r"tps = ([0-9.]+)")
_PROCESSED = re.compile(r"number of transactions actually processed: (\d+)")


@dataclass(frozen=True)
class Reference:
    """One pgbench reference."""

    key: str
    case: str
    script: str
    clients: int
    preload: bool = False


REFERENCES = (
    Reference("a", "(a) 1 INSERT per transaction, 1 client", "insert_one.sql", 1),
    Reference("b", "(b) claim 100 + complete, preloaded, 4 clients", "drain.sql", 4, True),
    Reference("c", "(c) insert 100 + claim + complete, 4 clients", "life.sql", 4),
)


def pgbench_binary() -> str:
    """pgbench from PATH, else PostgreSQL 15's."""
    found = shutil.which("pgbench") or "/usr/lib/postgresql/15/bin/pgbench"
    return found


def _connection_args(dsn: str) -> list[str]:
    url = urlsplit(dsn)
    args = ["-h", url.hostname or "127.0.0.1", "-p", str(url.port or 5432)]
    if url.username:
        args += ["-U", url.username]
    return [*args, url.path.lstrip("/")]


async def _command(argv: list[str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{text}")
    return text


async def _psql(dsn: str, script: str, *variables: str) -> None:
    conn = _connection_args(dsn)
    vars_args = [arg for v in variables for arg in ("-v", v)]
    await _command(
        ["psql", "-q", "-v", "ON_ERROR_STOP=1", *vars_args, "-f", str(SCRIPTS / script), *conn]
    )


async def _once(ctx: Context, ref: Reference) -> float:
    """jobs/s of one pgbench run in a fresh database."""
    sizes = ctx.sizes
    async with fresh_database("pgbench") as dsn:
        await _psql(dsn, "schema.sql")
        argv = [
            pgbench_binary(),
            "-n",
            "-M",
            "prepared",
            "-c",
            str(ref.clients),
            "-j",
            str(min(ref.clients, 2)),
            "-f",
            str(SCRIPTS / ref.script),
        ]
        if ref.preload:
            await _psql(dsn, "preload.sql", f"jobs={sizes.pgbench_drain_jobs}")
            per_client = sizes.pgbench_drain_jobs // 100 // ref.clients
            argv += ["-t", str(per_client)]
        else:
            argv += ["-T", str(sizes.pgbench_seconds)]
        output = await _command([*argv, *_connection_args(dsn)])
        tps = float(_TPS.findall(output)[-1])
        processed = int(_PROCESSED.findall(output)[-1])
        seconds = processed / tps
        state = "0" if ref.key == "a" else "2"
        jobs = await scalar(dsn, f"SELECT count(*) FROM job WHERE state = {state}")
        return jobs / seconds


async def run(ctx: Context) -> list[Measurement]:
    """Each reference, repeated."""
    rates: dict[str, list[float]] = {r.key: [] for r in REFERENCES}
    for _ in range(ctx.sizes.repeat):
        for ref in REFERENCES:
            rate = await _once(ctx, ref)
            rates[ref.key].append(rate)
            ctx.log(f"pgbench {ref.key}: {rate:,.0f} jobs/s")
    return [
        Measurement(
            ID,
            ref.case,
            "pgbench",
            "-M prepared",
            "throughput",
            "jobs/s",
            Summary.of(rates[ref.key]),
            key=ref.key,
        )
        for ref in REFERENCES
    ]
