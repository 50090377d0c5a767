"""An instance of an application on a host whose clock is off, driven line by line: the
test runs this under ``faketime`` and sends it commands on stdin; each answer is one JSON
line on stdout.

    clock        what this process believes the time is
    maintain     one maintenance pass
    cron         run the schedules due now
    send_after Q SECONDS
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone

from pgqueue import PgQueue


def main(dsn: str, schema: str) -> None:
    with PgQueue(dsn, schema=schema, maintenance=False) as pq:
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            command, *args = line.split()
            if command == "clock":
                answer: object = datetime.now(timezone.utc).isoformat()
            elif command == "maintain":
                result = pq.maintain()
                answer = {
                    "expired_active": result.expired_active,
                    "expired_waiting": result.expired_waiting,
                }
            elif command == "cron":
                answer = pq.run_schedules()
            elif command == "send_after":
                answer = pq.send_after(args[0], None, float(args[1]))
            else:
                answer = f"unknown command {command!r}"
            print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
