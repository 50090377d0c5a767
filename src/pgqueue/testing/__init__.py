"""Helpers for testing code that uses pgqueue (see docs/testing.md).

On a real database, without sleeping: :func:`drain` / :func:`adrain` run every job due
now, one at a time in claim order (the jobs those send too), and report each run;
:func:`advance` / :func:`aadvance` move the schema's clock and drain, so delays, retry
backoff, cron slots and expiry come due at once; :func:`assert_sent` and
:func:`sent_jobs` check what was sent. Without a database, :func:`eager` makes ``send``
run the handler at once. :func:`bind` points an application's queue object at a test's
schema; the pytest plugin (module ``pgqueue_pytest``, installed with pgqueue) gives
fixtures built on it.
"""

from ._bind import bind
from ._drain import aadvance, adrain, advance, drain
from ._eager import EagerError, EagerJobs, eager
from ._results import Drained, DrainError, DrainTimeoutError, Run, RunFailedError
from ._schemas import create_schema, drop_schema
from ._sent import ANY, aassert_sent, asent_jobs, assert_sent, matches, sent_jobs

__all__ = [
    "ANY",
    "DrainError",
    "DrainTimeoutError",
    "Drained",
    "EagerError",
    "EagerJobs",
    "Run",
    "RunFailedError",
    "aadvance",
    "aassert_sent",
    "adrain",
    "advance",
    "asent_jobs",
    "assert_sent",
    "bind",
    "create_schema",
    "drain",
    "drop_schema",
    "eager",
    "matches",
    "sent_jobs",
]
