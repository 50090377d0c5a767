"""Job catalogue: handlers registered with names and descriptions, listed and run by name.

From the root of a pgqueue checkout or unpacked sdist (examples/ is not in the wheel):

    pgqueue jobs examples.job_catalogue:pq                  # every job, its description and options
    pgqueue worker examples.job_catalogue:pq                # in another terminal
    pgqueue send examples.job_catalogue:pq add --data '{"a": 2, "b": 3}' --wait
"""

from pydantic import BaseModel

from pgqueue import PgQueue

pq = PgQueue()


class Pair(BaseModel):
    a: int
    b: int


@pq.job("add", description="Add two numbers", retry_limit=0)
def add(data: Pair) -> int:
    return data.a + data.b


@pq.job("greet", priority=5, expire_in=10)
def greet(data: dict[str, str]) -> str:
    """Greet someone by name."""
    return f"Hello, {data.get('name', 'world')}!"


@pq.job("reindex", concurrency=1, retry_limit=5, retry_backoff=True)
def reindex(data: object = None) -> dict[str, int]:
    """Rebuild the search index (one at a time)."""
    return {"documents": 42}
