"""The pieces several statements share (the columns of a claim, the options an insert
resolves, the policy clashes), and the embedded server's own statements."""

from __future__ import annotations

__all__ = [
    "ALL_JOB_COLUMNS",
    "CLAIM",
    "CLAIM_RETURNING",
    "CLAIM_SET",
    "GRANT",
    "GROUPED",
    "HELD",
    "INPUT_COLUMNS",
    "INSERT_COLUMNS_NO_ID",
    "JOB_COLUMNS",
    "LIMITED",
    "MAX_ERRORS",
    "RESOLVED_NO_ID",
    "RETRY_DELAY",
    "SERVER_DATABASE_CREATE",
    "SERVER_DATABASE_EXISTS",
    "SERVER_WAL_LIMIT",
    "SERVER_WAL_SETTINGS",
    "SINGLE_INPUT",
    "clashes",
    "held_values",
    "in_state",
    "job_input",
    "kept_starts",
    "logged",
]

# The embedded server's own statements (no schema): its database, and a small WAL.
SERVER_DATABASE_EXISTS = "SELECT 1 FROM pg_database WHERE datname = %s"
SERVER_DATABASE_CREATE = "CREATE DATABASE {}"
SERVER_WAL_LIMIT = "SELECT setting::integer FROM pg_settings WHERE name = 'max_wal_size'"
SERVER_WAL_SETTINGS = (
    "ALTER SYSTEM SET max_wal_size = '256MB'",
    "ALTER SYSTEM SET min_wal_size = '32MB'",
    "SELECT pg_reload_conf()",
)

JOB_COLUMNS = """id, name, data, state, priority, retry_count, attempt, run_id, retry_limit,
    retry_delay,
    retry_backoff, retry_delay_max, expire_in, heartbeat_seconds, start_after, started_at,
    created_at, completed_at, keep_until, singleton_key, singleton_on, dead_letter,
    delete_after, output, progress, group_key, errors, depends_on, trace"""

# The most errors of failed attempts a job keeps (the last ones; see Job.errors).
MAX_ERRORS = 20
# The most attempts whose logs a job keeps (the last ones; see Job.logs).
MAX_LOGGED_ATTEMPTS = 10


def logged(extra: str) -> str:
    """A run's new value of job.logs (of the job aliased j): its last attempts' logs plus
    the ``logs`` of the run's ``extra`` JSON object, when it has some."""
    return f"""CASE WHEN {extra} ? 'logs' THEN
            jsonb_path_query_array(COALESCE(j.logs, '[]'),
                                   '$[last - {MAX_LOGGED_ATTEMPTS - 2} to last]')
            || jsonb_build_array({extra} -> 'logs')
        ELSE j.logs END"""


# A claim: the jobs become active, held by %(worker_id)s, in a new attempt, as a new run
# with a random token (run_id: every later write of this run names it, and a token never
# comes back, unlike a count when a claim rolls back). A run's first heartbeat is its start
# (heartbeat_at stays NULL until it beats). A job that ran before (back to retry, or
# resumed) drops its output, the error it last failed with (job.errors keeps it): a
# running job shows no earlier attempt's outcome. (A job never run keeps what it was sent
# with: a dead-letter copy's source.) PostgreSQL plans a claim at every run (its LIMIT
# varies), so claims are written to be cheap to plan.
CLAIM_SET = """SET state = 'active', started_at = {now}, heartbeat_at = NULL,
            output = CASE WHEN j.attempt > 0 THEN NULL ELSE j.output END,
            worker_id = %(worker_id)s, attempt = j.attempt + 1,
            run_id = floor(random() * 9.2e18)::bigint,
            run_heartbeat = COALESCE(j.heartbeat_seconds, %(heartbeat)s::float8)"""
CLAIM_RETURNING = "RETURNING " + ", ".join("j." + c.strip() for c in JOB_COLUMNS.split(","))

# Claim the jobs of CTE "next" (of queue %(name)s: named, so that a partitioned job table
# is read in that queue's partition only).
CLAIM = f"""UPDATE {{schema}}.job j
        {CLAIM_SET}
        FROM next
        WHERE j.name = %(name)s AND j.id = next.id
        {CLAIM_RETURNING}"""

# Whether queue q groups its jobs.
GROUPED = "(q.group_concurrency IS NOT NULL OR q.ordered OR q.group_rate_count IS NOT NULL)"

# Whether a queue (its row in scope) has limits across workers: its fetchers take turns.
LIMITED = """(concurrency IS NOT NULL OR rate_count IS NOT NULL OR group_concurrency IS NOT NULL
    OR ordered OR group_rate_count IS NOT NULL)"""


def kept_starts(starts: str, count: str, seconds: str) -> str:
    """A rate window's starts to keep: those of the last ``seconds``, and those stamped
    after now (the clock was set back), the newest ``count`` of them, which count again
    once the clock is back there."""
    return f"""(ARRAY(SELECT s FROM unnest({starts}) s
                      WHERE s > {{now}} - make_interval(secs => {seconds})
                          AND s <= {{now}})
            || ARRAY(SELECT s FROM unnest({starts}) s WHERE s > {{now}}
                     ORDER BY s DESC LIMIT {count}))"""


# The start of a job waiting for its parents (see migrations/0012): far enough ahead that
# no claim takes it and no retention expires it (keep_until is its retention later), and a
# date Python reads.
HELD = "'9000-01-01 00:00:00+00'::timestamptz"

# Every column of job, for moving rows to the archive (which has them all, plus archived_at).
ALL_JOB_COLUMNS = """id, priority, retry_count, retry_limit, retry_delay, retry_backoff, state,
    retry_delay_max, expire_in, heartbeat_seconds, delete_after, start_after, keep_until,
    created_at, started_at, heartbeat_at, completed_at, singleton_on, name, singleton_key,
    policy, dead_letter, worker_id, data, output, progress, attempt, run_id, run_heartbeat,
    group_key, errors, depends_on, dependents, logs, trace"""

# Columns of job that an insert sets (besides id), in the order of RESOLVED_NO_ID.
INSERT_COLUMNS_NO_ID = """name, data, priority, retry_limit, retry_delay, retry_backoff,
    retry_delay_max, expire_in, heartbeat_seconds, delete_after, dead_letter, policy,
    start_after, keep_until, singleton_key, singleton_on, group_key, trace"""


def held_values(columns: str) -> str:
    """``columns`` (of INSERT_COLUMNS_NO_ID) as a select list of CTE "resolved", with the
    start of a job waiting for its parents (``held``) at HELD, and its retention after."""
    names = [c.strip() for c in columns.split(",")]
    return ", ".join(
        {
            "start_after": f"CASE WHEN held THEN {HELD} ELSE start_after END",
            "keep_until": f"CASE WHEN held THEN {HELD} + (keep_until - start_after)"
            " ELSE keep_until END",
        }.get(c, c)
        for c in names
    )


# A job's input: its name, data and the options the sender gave (NULL when left out).
INPUT_COLUMNS = """name text, data jsonb, priority integer, retry_limit integer,
    retry_delay float8, retry_backoff boolean, retry_delay_max float8, expire_in float8,
    heartbeat_seconds float8, retention float8, delete_after float8, dead_letter text,
    start_after timestamptz, start_in float8, singleton_key text, singleton_seconds integer,
    group_key text, trace jsonb"""


def job_input(**given: str) -> str:
    """The input columns as a select list: statement parameters, unless ``given``."""
    columns = [c.split() for c in INPUT_COLUMNS.replace("\n", " ").split(",")]
    return ", ".join(
        f"{given.get(name, f'%({name})s::{kind}')} AS {name}" for name, kind in columns
    )


# One job's input as statement parameters.
SINGLE_INPUT = job_input()

# Each option resolved: the sender's value, else the queue's (q), else the default. A start
# is a date (start_after) or a delay from now (start_in); time slots (singleton_seconds) are
# cut from the clock.
RESOLVED_NO_ID = (
    """i.name, i.data, COALESCE(i.priority, 0) AS priority,
    COALESCE(i.retry_limit, q.retry_limit, 2) AS retry_limit,
    COALESCE(i.retry_delay, q.retry_delay, 0) AS retry_delay,
    COALESCE(i.retry_backoff, q.retry_backoff, false) AS retry_backoff,
    COALESCE(i.retry_delay_max, q.retry_delay_max) AS retry_delay_max,
    COALESCE(i.expire_in, q.expire_in, 900) AS expire_in,
    COALESCE(i.heartbeat_seconds, q.heartbeat_seconds) AS heartbeat_seconds,
    COALESCE(i.delete_after, q.delete_after, 604800) AS delete_after,
    COALESCE(i.dead_letter, q.dead_letter) AS dead_letter,
    q.policy AS policy,
    COALESCE(i.start_after, {now} + make_interval(secs => COALESCE(i.start_in, 0)))
        AS start_after,
    COALESCE(i.start_after, {now} + make_interval(secs => COALESCE(i.start_in, 0)))
        + make_interval(secs => LEAST(COALESCE(i.retention, q.retention, 1209600),
                                      {max_seconds})) AS keep_until,
    i.singleton_key,
    to_timestamp(floor(extract(epoch FROM {now}) / i.singleton_seconds)
        * i.singleton_seconds) AS singleton_on,
    COALESCE(i.group_key, CASE WHEN """
    + GROUPED
    + """ THEN '' END) AS group_key, i.trace"""
)

# The retry delay of a job that has just failed for the (retry_count + 1)th time:
# retry_delay, doubled per earlier retry with equal jitter when retry_backoff, capped by
# retry_delay_max, and by {max_seconds} (ten years: options are never longer, and the
# times computed from them stay in range even for rows written by hand).
RETRY_DELAY = """make_interval(secs => LEAST(
    COALESCE(j.retry_delay_max, 'Infinity'::float8), {max_seconds},
    CASE WHEN j.retry_backoff
        THEN j.retry_delay * power(2, LEAST(j.retry_count, 52)) * (0.5 + random() / 2)
        ELSE j.retry_delay END))"""


def clashes(state: str, policies: tuple[str, ...]) -> str:
    """True when job ``j`` entering ``state`` would break a unique index held by another
    job: its singleton key (standard queues), its time slot, or the limit of its queue's
    policy among ``policies`` (see migrations/0001). One EXISTS per index, each written so
    that the index it guards answers it (its predicate's constants spelled out)."""
    same_key = "COALESCE(o.singleton_key, '') = COALESCE(j.singleton_key, '')"
    arms = [
        """(j.policy = 'standard' AND j.singleton_key IS NOT NULL AND j.singleton_on IS NULL
            AND EXISTS (SELECT FROM {schema}.job o
                WHERE o.name = j.name AND o.singleton_key = j.singleton_key AND o.id <> j.id
                    AND o.state <= 'active' AND o.singleton_on IS NULL
                    AND o.policy = 'standard'))""",
        f"""(j.singleton_on IS NOT NULL
            AND EXISTS (SELECT FROM {{schema}}.job o
                WHERE o.name = j.name AND o.singleton_on = j.singleton_on AND {same_key}
                    AND o.id <> j.id AND o.state <> 'cancelled'))""",
        *(
            f"""(j.policy = '{policy}'
            AND EXISTS (SELECT FROM {{schema}}.job o
                WHERE o.name = j.name AND {same_key} AND o.id <> j.id
                    AND o.state = '{state}' AND o.policy = '{policy}'))"""
            for policy in policies
        ),
    ]
    return "(" + "\n        OR ".join(arms) + ")"


def in_state(alias: str, state: str) -> str:
    """``alias``'s job is in ``state``, written so that no partial index on state matches
    it: a statement that names its rows by id then finds them by primary key whatever the
    statistics say. (Written ``state = 'active'``, with statistics from before the active
    rows existed, it read every active job through job_active_idx once per batch.)"""
    return f"{alias}.state::text = '{state}'"


# What a worker's role needs, for the tables and sequences there are and for those a later
# migration (run by the owner) creates.
GRANT = """
    GRANT USAGE ON SCHEMA {schema} TO {role};
    GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role};
    GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role};
    GRANT EXECUTE ON FUNCTION {schema}.clock() TO {role};
    GRANT EXECUTE ON FUNCTION {schema}.job_partition_create(text),
        {schema}.job_partition_drop(text) TO {role};
    ALTER DEFAULT PRIVILEGES IN SCHEMA {schema}
        GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role};
    ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT USAGE, SELECT ON SEQUENCES TO {role}"""
