"""Long-running job: runs for minutes, reports progress, keeps a heartbeat, can be cancelled
while it runs, and resumes on another worker when its worker dies.

The worker refreshes the job's heartbeat while the handler runs. If the worker is killed, the
heartbeat goes stale; maintenance (which every started pgqueue instance runs) sends the job
back to retry, another worker picks it up, and the handler carries on from its last reported
progress instead of starting over.

From the root of a pgqueue checkout or unpacked sdist (examples/ is not in the wheel):

    pgqueue worker examples.long_running:pq                  # one or more, anywhere
    python examples/long_running.py send --steps 300         # five minutes; prints the id
    python examples/long_running.py status ID                # state, progress, output
    python examples/long_running.py cancel ID                # stops it while it runs
"""

import argparse
import asyncio

from pydantic import BaseModel, Field

from pgqueue import AsyncPgQueue, RunningJob

pq = AsyncPgQueue()  # $PGQUEUE_DATABASE_URL, else the embedded PostgreSQL


class Crunch(BaseModel):
    steps: int = Field(gt=0)
    step_seconds: float = Field(default=1.0, ge=0)


@pq.job(
    "crunch",
    heartbeat_seconds=10,  # no heartbeat for 10 s: the worker is gone, run it elsewhere
    expire_in=3 * 3600,  # the longest a single attempt may run
    retry_limit=3,
    retry_delay=0,
)
async def crunch(data: Crunch, job: RunningJob) -> dict[str, int]:
    """Crunch ``steps`` numbers, checkpointing its progress after each one."""
    start = (job.last_progress or {}).get("done", 0)  # 0, or where a dead worker stopped
    for step in range(start, data.steps):
        await asyncio.sleep(data.step_seconds)  # cancel() interrupts it here
        job.progress({"done": step + 1, "of": data.steps})
    return {"steps": data.steps, "resumed_at": start}


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    send = commands.add_parser("send")
    send.add_argument("--steps", type=int, default=300)
    send.add_argument("--step-seconds", type=float, default=1.0)
    send.add_argument("--heartbeat", type=float, help="heartbeat_seconds for this job")
    for name in ("status", "cancel"):
        commands.add_parser(name).add_argument("id", type=int)
    args = parser.parse_args(argv)
    async with pq:
        if args.command == "send":
            data = Crunch(steps=args.steps, step_seconds=args.step_seconds)
            options = {} if args.heartbeat is None else {"heartbeat_seconds": args.heartbeat}
            print(await crunch.send(data, **options))
        elif args.command == "status":
            job = await pq.get_job_by_id(args.id)
            print(
                "no such job"
                if job is None
                else f"{job.state.value} progress={job.last_progress} output={job.output}"
            )
        else:
            print("cancelled" if await pq.cancel(args.id) else "already finished")


if __name__ == "__main__":
    asyncio.run(main())
