"""Sync producer: a plain blocking program (a script, a Django view, a cron job) sends jobs
with ``PgQueue`` on its own psycopg connection, inside its own transaction; async handlers,
run by ``pgqueue worker``, consume them.

The jobs commit or roll back with the rest of the producer's transaction: the second batch
below is rolled back, and no worker ever sees it.

From the root of a pgqueue checkout or unpacked sdist (examples/ is not in the wheel):

    python examples/sync_producer.py                        # prints the ids of the jobs sent
    pgqueue worker examples.sync_producer:pq                # runs the async handlers
"""

import asyncio

import psycopg

from pgqueue import AsyncPgQueue, PgQueue

# The consuming side: async handlers, run with `pgqueue worker examples.sync_producer:pq`.
pq = AsyncPgQueue()


@pq.job("resize-image", retry_limit=3)
async def resize_image(data: dict[str, int | str]) -> str:
    """Make a thumbnail of an uploaded image."""
    await asyncio.sleep(0.01)  # stands for the real work
    return f"{data['path']} resized to {data['width']}px"


def main() -> None:
    producer = PgQueue()  # the same database: $PGQUEUE_DATABASE_URL, else embedded
    with producer, psycopg.connect(producer.dsn or "", autocommit=True) as conn:
        producer.create_queue("resize-image")  # a no-op once any worker declared it
        conn.execute("CREATE TABLE IF NOT EXISTS image (path text PRIMARY KEY)")
        with conn.transaction():  # the rows and their jobs commit together
            ids = []
            for n in range(3):
                conn.execute(
                    "INSERT INTO image VALUES (%s) ON CONFLICT DO NOTHING", (f"img/{n}.png",)
                )
                data = {"path": f"img/{n}.png", "width": 128}
                ids.append(producer.send("resize-image", data, conn=conn))
        try:
            with conn.transaction():
                producer.send("resize-image", {"path": "img/bad.png", "width": 128}, conn=conn)
                raise RuntimeError("the upload failed half way")
        except RuntimeError:
            pass  # rolled back: that job was never visible to any worker
        print("sent", ids)


if __name__ == "__main__":
    main()
