"""Cron: two schedules declared in code, next to their handlers, and one added at run time.

Every started pgqueue instance looks at the schedules each maintenance interval; a slot's job
is sent exactly once however many instances run (the slot is claimed in the database), and
slots missed while every instance was down are sent once, not replayed. Wall-clock times
follow their time zone, daylight saving included.

From the root of a pgqueue checkout or unpacked sdist (examples/ is not in the wheel):

    python examples/cron_schedules.py            # adds the run-time schedule, then works
    pgqueue worker examples.cron_schedules:pq    # more workers: the schedules still fire once
"""

from pgqueue import PgQueue

pq = PgQueue()  # $PGQUEUE_DATABASE_URL, else the embedded PostgreSQL


@pq.cron("* * * * *", name="heartbeat-check")  # every minute, UTC
def heartbeat_check() -> str:
    """Check that the services answer."""
    return "all services up"


@pq.cron("0 9 * * *", name="morning-report", tz="Europe/Berlin", data={"format": "pdf"})
def morning_report(data: dict[str, str]) -> str:
    """Mail the morning report at 09:00 Berlin time."""
    return f"morning report sent as {data['format']}"


@pq.job("nightly-cleanup")
def nightly_cleanup(data: dict[str, int]) -> str:
    """Delete what is older than ``older_than_days``."""
    return f"deleted rows older than {data['older_than_days']} days"


def add_cleanup_schedule() -> None:
    """A schedule added at run time (from an admin screen, say); it stays until unscheduled."""
    pq.schedule("nightly-cleanup", "30 2 * * *", {"older_than_days": 30}, tz="UTC")


def main() -> None:
    with pq:
        add_cleanup_schedule()
        for schedule in pq.get_schedules():
            print(f"{schedule.name}: {schedule.cron} ({schedule.tz})")
        pq.work()  # runs the handlers (and, like every started instance, the schedules)


if __name__ == "__main__":
    main()
