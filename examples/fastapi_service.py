"""FastAPI service: the app's lifespan starts and stops pgqueue; ``POST /reports`` sends a job
inside the request's own database transaction and returns its id; ``GET /jobs/{id}`` returns
the job's state, progress and output. Workers run in processes of their own.

A request that fails rolls its job back with everything else it wrote: asking twice for the
same year's report answers 409 and leaves one job.

FastAPI and uvicorn come with the examples extra (the extra brings the dependencies, not the
examples: they are in the repository and the sdist, not the wheel). From the root of a pgqueue
checkout or unpacked sdist:

    pip install 'pgqueue[examples]'                           # or: pip install -e '.[examples]'
    uvicorn examples.fastapi_service:app                      # the API
    pgqueue worker examples.fastapi_service:pq                # the workers, as many as needed
    curl -X POST localhost:8000/reports -H 'content-type: application/json' -d '{"year": 2026}'
    curl localhost:8000/jobs/1
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import psycopg
from fastapi import Depends, FastAPI, HTTPException, Request
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field

from pgqueue import AsyncPgQueue, RunningJob

pq = AsyncPgQueue()  # $PGQUEUE_DATABASE_URL, else the embedded PostgreSQL


class ReportRequest(BaseModel):
    year: int = Field(ge=2000, le=2100)


@pq.job("build-report", retry_limit=2, expire_in=600, heartbeat_seconds=30)
async def build_report(data: ReportRequest, job: RunningJob) -> dict[str, Any]:
    """Build the yearly report, a month at a time."""
    for month in range(1, 13):
        await asyncio.sleep(0.05)  # stands for a month's worth of queries
        job.progress({"month": month, "of": 12})
    return {"year": data.year, "pages": 12}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # pgqueue connects, migrates and runs maintenance; the app's own pool opens next to it.
    async with pq, AsyncConnectionPool(pq.dsn or "", open=False) as pool:
        async with pool.connection() as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS report (year int PRIMARY KEY, job_id bigint NOT NULL)"
            )
        app.state.pool = pool
        yield


async def transaction(request: Request) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """The request's database transaction: committed when the handler returns, before the
    response goes out (scope="function"), rolled back if it raises."""
    async with request.app.state.pool.connection() as conn:
        yield conn


Transaction = Annotated[psycopg.AsyncConnection[Any], Depends(transaction, scope="function")]
app = FastAPI(lifespan=lifespan)


@app.post("/reports", status_code=202)
async def request_report(body: ReportRequest, conn: Transaction) -> dict[str, Any]:
    job_id = await build_report.send(body, conn=conn)
    try:
        await conn.execute("INSERT INTO report (year, job_id) VALUES (%s, %s)", (body.year, job_id))
    except psycopg.errors.UniqueViolation:  # the rollback takes the job with it
        raise HTTPException(409, f"the {body.year} report is already requested") from None
    return {"job_id": job_id}


@app.get("/jobs/{job_id}")
async def job_status(job_id: int) -> dict[str, Any]:
    job = await pq.get_job_by_id(job_id)
    if job is None:
        raise HTTPException(404, "no such job")
    return {"state": job.state.value, "progress": job.last_progress, "output": job.output}
