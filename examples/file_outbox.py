"""File-uploaded outbox: the upload stores its file record and publishes ``file.uploaded`` in
one transaction, so the event exists if and only if the file does. Two queues subscribe to
the event (thumbnail, virus-scan); each gets and processes its own copy, and a failure of one
copy does not touch the other. The event history is listed from the jobs the event became,
and a copy that failed for good is re-run by hand.

From the root of a pgqueue checkout or unpacked sdist (examples/ is not in the wheel):

    python examples/file_outbox.py
    pgqueue worker examples.file_outbox:pq       # how an application runs these handlers
"""

import asyncio

import psycopg

from pgqueue import AsyncPgQueue, JobState

pq = AsyncPgQueue()  # $PGQUEUE_DATABASE_URL, else the embedded PostgreSQL
scanner_online = False  # the virus scanner is down at first


@pq.job("thumbnail")
async def make_thumbnail(data: dict[str, str]) -> str:
    """Render the thumbnail of an uploaded file."""
    return f"thumbnail of {data['path']}"


@pq.job("virus-scan", retry_limit=1, retry_delay=0)
async def scan(data: dict[str, str]) -> str:
    """Scan an uploaded file."""
    if not scanner_online:
        raise ConnectionError("virus scanner unreachable")
    return f"{data['path']} is clean"


async def upload(path: str) -> None:
    """Store the file and its event atomically: the transactional outbox."""
    async with await psycopg.AsyncConnection.connect(pq.dsn or "") as conn, conn.transaction():
        await conn.execute("INSERT INTO uploaded_file (path) VALUES (%s)", (path,))
        job_ids = await pq.publish("file.uploaded", {"path": path}, conn=conn)
        await conn.execute("UPDATE uploaded_file SET job_ids = %s WHERE path = %s", (job_ids, path))


async def history(path: str) -> list[tuple[int, str, JobState, str]]:
    """What became of a file's event: (job id, queue, state, output or error) per copy."""
    async with await psycopg.AsyncConnection.connect(pq.dsn or "") as conn:
        cur = await conn.execute("SELECT job_ids FROM uploaded_file WHERE path = %s", (path,))
        (job_ids,) = await cur.fetchone() or ([],)
    rows = []
    for job_id in job_ids:
        job = await pq.get_job_by_id(job_id)  # looks in the archive too
        if job is not None:
            result = job.output["message"] if job.state is JobState.failed else job.output
            rows.append((job.id, job.name, job.state, str(result)))
    return rows


async def main() -> None:
    global scanner_online
    async with pq:
        async with await psycopg.AsyncConnection.connect(pq.dsn or "", autocommit=True) as c:
            await c.execute("DROP TABLE IF EXISTS uploaded_file")  # a fresh demo each run
            await c.execute("CREATE TABLE uploaded_file (path text PRIMARY KEY, job_ids bigint[])")
        await pq.subscribe("file.uploaded", "thumbnail")
        await pq.subscribe("file.uploaded", "virus-scan")
        await upload("cat.png")
        await pq.work(until_empty=True)  # the scan fails, is retried once, fails for good
        for job_id, queue, state, result in await history("cat.png"):
            print(f"job {job_id} {queue}: {state.value}: {result}")
        scanner_online = True
        failed = [
            job_id for job_id, _, state, _ in await history("cat.png") if state is JobState.failed
        ]
        print("re-running", len(await pq.retry(failed)), "failed copy")
        await pq.work(until_empty=True)
        for job_id, queue, state, result in await history("cat.png"):
            print(f"job {job_id} {queue}: {state.value}: {result}")


if __name__ == "__main__":
    asyncio.run(main())
