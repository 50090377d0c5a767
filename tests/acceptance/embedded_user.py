"""A process that uses the embedded server, driven line by line from stdin (the embedded
lifecycle test runs several): ``start`` starts a queue object, ``stop`` stops the newest,
``query`` runs a statement on the server, ``exit`` leaves without stopping anything."""

from __future__ import annotations

import json
import sys

import psycopg

from pgqueue import PgQueue


def main() -> None:
    queues: list[PgQueue] = []
    dsn = ""
    print(json.dumps("ready"), flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "start":
            queues.append(PgQueue(schema="lifecycle", maintenance=False).start())
            dsn = queues[-1].dsn or ""
            answer: object = dsn
        elif command == "stop":
            queues.pop().stop()
            answer = "stopped"
        elif command == "query":
            with psycopg.connect(dsn) as conn:
                answer = conn.execute("SELECT 1").fetchone()[0]  # type: ignore[index]
        elif command == "exit":
            return
        else:
            answer = f"unknown command {command!r}"
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
