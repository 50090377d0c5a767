"""Quickstart: one handler, a few jobs, their results.

From the root of a pgqueue checkout or unpacked sdist (examples/ is not in the wheel), run it
with ``python3 dev.py demo`` (sets up a virtualenv first), or with
``python examples/quickstart.py`` where pgqueue is installed.
With no ``PGQUEUE_DATABASE_URL`` set, pgqueue starts an embedded PostgreSQL and keeps its data
in a per-user directory; with it set, the jobs go to that database.
"""

import asyncio

from pgqueue import AsyncPgQueue

pq = AsyncPgQueue()  # $PGQUEUE_DATABASE_URL, else an embedded PostgreSQL


@pq.job("greet", retry_limit=3)
async def greet(name: str) -> str:
    return f"Hello, {name}!"


async def main() -> None:
    async with pq:
        ids = [await greet.send(name) for name in ("Ada", "Grace", "Linus")]
        await pq.work(until_empty=True)  # a real app runs `pgqueue worker app:pq` instead
        for job_id in ids:  # an id is None only when a singleton or policy refused the job
            job = await pq.get_job_by_id(job_id) if job_id is not None else None
            if job is not None:
                print(f"job {job.id} {job.state.value}: {job.output}")


if __name__ == "__main__":
    asyncio.run(main())
