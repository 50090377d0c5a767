"""Every SQL statement pgqueue runs, named by entity and verb.

Each statement is an attribute of :class:`Statements`, its template naming the schema as
``{schema}`` (and a few other identifiers or literals in braces); ``Statements(schema)``
formats them once per schema with :mod:`psycopg.sql`, so nothing else in the package builds
SQL. Values are always ``%(name)s`` parameters. Some templates share fragments (the columns of
a claim, the options an insert resolves): tests/snapshots/statements.sql shows every statement
whole, rendered (regenerate it with ``python -m tests.snapshots statements``).

Time is read in one way only, ``{now}``: the schema's clock function (migrations/0004), which
is the database's ``statement_timestamp()`` unless a test moved it. No statement takes a time
from the client except a ``start_after`` the user gave as a date.
"""

from __future__ import annotations

from typing import overload

from psycopg import sql

from .models import MAX_SECONDS

__all__ = [
    "JOB_COLUMNS",
    "SERVER_DATABASE_CREATE",
    "SERVER_DATABASE_EXISTS",
    "SERVER_WAL_LIMIT",
    "SERVER_WAL_SETTINGS",
    "Statements",
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
    delete_after, output, progress"""

# A claim: the jobs become active, held by %(worker_id)s, in a new attempt, as a new run
# with a random token (run_id: every later write of this run names it, and a token never
# comes back, unlike a count when a claim rolls back). A run's first heartbeat is its start
# (heartbeat_at stays NULL until it beats). PostgreSQL plans a claim at every run (its
# LIMIT varies), so claims are written to be cheap to plan.
_CLAIM_SET = """SET state = 'active', started_at = {now}, heartbeat_at = NULL,
            worker_id = %(worker_id)s, attempt = j.attempt + 1,
            run_id = floor(random() * 9.2e18)::bigint,
            run_heartbeat = COALESCE(j.heartbeat_seconds, %(heartbeat)s::float8)"""
_CLAIM_RETURNING = "RETURNING " + ", ".join("j." + c.strip() for c in JOB_COLUMNS.split(","))

# Claim the jobs of CTE "next".
_CLAIM = f"""UPDATE {{schema}}.job j
        {_CLAIM_SET}
        FROM next
        WHERE j.id = next.id
        {_CLAIM_RETURNING}"""

# Every column of job, for moving rows to the archive (which has them all, plus archived_at).
_ALL_JOB_COLUMNS = """id, priority, retry_count, retry_limit, retry_delay, retry_backoff, state,
    retry_delay_max, expire_in, heartbeat_seconds, delete_after, start_after, keep_until,
    created_at, started_at, heartbeat_at, completed_at, singleton_on, name, singleton_key,
    policy, dead_letter, worker_id, data, output, progress, attempt, run_id, run_heartbeat"""

# Columns of job that an insert sets (besides id), in the order of _RESOLVED_NO_ID.
_INSERT_COLUMNS_NO_ID = """name, data, priority, retry_limit, retry_delay, retry_backoff,
    retry_delay_max, expire_in, heartbeat_seconds, delete_after, dead_letter, policy,
    start_after, keep_until, singleton_key, singleton_on"""

# A job's input: its name, data and the options the sender gave (NULL when left out).
_INPUT_COLUMNS = """name text, data jsonb, priority integer, retry_limit integer,
    retry_delay float8, retry_backoff boolean, retry_delay_max float8, expire_in float8,
    heartbeat_seconds float8, retention float8, delete_after float8, dead_letter text,
    start_after timestamptz, start_in float8, singleton_key text, singleton_seconds integer"""


def _input(**given: str) -> str:
    """The input columns as a select list: statement parameters, unless ``given``."""
    columns = [c.split() for c in _INPUT_COLUMNS.replace("\n", " ").split(",")]
    return ", ".join(
        f"{given.get(name, f'%({name})s::{kind}')} AS {name}" for name, kind in columns
    )


# One job's input as statement parameters.
_SINGLE_INPUT = _input()

# Each option resolved: the sender's value, else the queue's (q), else the default. A start
# is a date (start_after) or a delay from now (start_in); time slots (singleton_seconds) are
# cut from the clock.
_RESOLVED_NO_ID = """i.name, i.data, COALESCE(i.priority, 0) AS priority,
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
        * i.singleton_seconds) AS singleton_on"""

# The retry delay of a job that has just failed for the (retry_count + 1)th time:
# retry_delay, doubled per earlier retry with equal jitter when retry_backoff, capped by
# retry_delay_max, and by {max_seconds} (ten years: options are never longer, and the
# times computed from them stay in range even for rows written by hand).
_RETRY_DELAY = """make_interval(secs => LEAST(
    COALESCE(j.retry_delay_max, 'Infinity'::float8), {max_seconds},
    CASE WHEN j.retry_backoff
        THEN j.retry_delay * power(2, LEAST(j.retry_count, 52)) * (0.5 + random() / 2)
        ELSE j.retry_delay END))"""


def _clashes(state: str, policies: str) -> str:
    """True when job ``j`` entering ``state`` would break a unique index held by another
    job: its singleton key (standard queues), its time slot, or the limit of its queue's
    policy among ``policies`` (see migrations/0001)."""
    return f"""EXISTS (
            SELECT FROM {{schema}}.job o
            WHERE o.name = j.name AND o.id <> j.id
                AND COALESCE(o.singleton_key, '') = COALESCE(j.singleton_key, '')
                AND ((j.policy = 'standard' AND j.singleton_key IS NOT NULL
                      AND j.singleton_on IS NULL AND o.policy = 'standard'
                      AND o.singleton_key IS NOT NULL AND o.singleton_on IS NULL
                      AND o.state <= 'active')
                  OR (j.singleton_on IS NOT NULL AND o.singleton_on = j.singleton_on
                      AND o.state <> 'cancelled')
                  OR (j.policy IN ({policies}) AND o.policy = j.policy
                      AND o.state = '{state}')))"""


# What a worker's role needs, for the tables and sequences there are and for those a later
# migration (run by the owner) creates.
_GRANT = """
    GRANT USAGE ON SCHEMA {schema} TO {role};
    GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role};
    GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role};
    GRANT EXECUTE ON FUNCTION {schema}.clock() TO {role};
    ALTER DEFAULT PRIVILEGES IN SCHEMA {schema}
        GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role};
    ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT USAGE, SELECT ON SEQUENCES TO {role}"""


class _Template:
    """A statement of :class:`Statements`: on the class, its template; on an instance, the
    statement rendered for the instance's schema."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.name = ""

    def __set_name__(self, owner: type[Statements], name: str) -> None:
        self.name = name

    @overload
    def __get__(self, statements: None, owner: type[Statements]) -> _Template: ...

    @overload
    def __get__(self, statements: Statements, owner: type[Statements]) -> str: ...

    def __get__(self, statements: Statements | None, owner: type[Statements]) -> _Template | str:
        return self if statements is None else statements._rendered[self.name]


class Statements:
    """The statements of one schema, as query strings ready to execute (and to prepare).

    Statements are declared as class attributes, so a misspelled name fails type checking.
    """

    # -- migrations ------------------------------------------------------------------------
    lock_migrations = _Template("SELECT pg_advisory_lock(hashtext({lock_key}))")
    unlock_migrations = _Template("SELECT pg_advisory_unlock(hashtext({lock_key}))")
    begin = _Template("BEGIN")
    commit = _Template("COMMIT")
    rollback = _Template("ROLLBACK")
    # Created only when missing: CREATE SCHEMA IF NOT EXISTS needs CREATE on the database
    # even when the schema exists, which the schema's owner may well not have.
    schema_exists = _Template("SELECT to_regnamespace({schema_name}) IS NOT NULL AS exists")
    schema_create = _Template("CREATE SCHEMA IF NOT EXISTS {schema}")
    version_create = _Template("""
        CREATE TABLE IF NOT EXISTS {schema}.version (
            version integer PRIMARY KEY,
            name text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )""")
    version_table_exists = _Template("SELECT to_regclass({version_table}) IS NOT NULL AS exists")
    version_current = _Template("SELECT max(version) AS version FROM {schema}.version")
    version_insert = _Template(
        "INSERT INTO {schema}.version (version, name) VALUES (%(version)s, %(name)s)"
    )
    # -- jobs: producing -------------------------------------------------------------------
    # One job, the common case: options resolved against its queue, inserted unless a
    # singleton or policy index blocks it, workers woken if it can run now. No row back
    # means blocked, or no such queue (the caller then looks with queue_exists).
    job_insert = _Template(f"""
        WITH inserted AS (
            INSERT INTO {{schema}}.job ({_INSERT_COLUMNS_NO_ID})
            SELECT {_RESOLVED_NO_ID}
            FROM (SELECT {_SINGLE_INPUT}) AS i
            JOIN {{schema}}.queue q ON q.name = i.name
            ON CONFLICT DO NOTHING
            RETURNING id, name, start_after
        )
        SELECT id, CASE WHEN start_after <= {{now}}
            THEN pg_notify({{jobs_channel}}, name) END AS notified
        FROM inserted""")
    queue_exists = _Template(
        "SELECT EXISTS (SELECT FROM {schema}.queue WHERE name = %(name)s) AS exists"
    )
    # Publish: one job per queue subscribed to %(event)s, in one statement.
    job_publish = _Template(f"""
        WITH inserted AS (
            INSERT INTO {{schema}}.job ({_INSERT_COLUMNS_NO_ID})
            SELECT {_RESOLVED_NO_ID}
            FROM (SELECT {_input(name="s.queue")} FROM {{schema}}.subscription s
                  WHERE s.event = %(event)s) AS i
            JOIN {{schema}}.queue q ON q.name = i.name
            ON CONFLICT DO NOTHING
            RETURNING id, name, start_after
        )
        SELECT id, name, (SELECT count(pg_notify({{jobs_channel}}, w.name))
                          FROM (SELECT DISTINCT name FROM inserted
                                WHERE start_after <= {{now}}) AS w) AS notified
        FROM inserted ORDER BY name""")
    subscription_add = _Template("""
        INSERT INTO {schema}.subscription (event, queue) VALUES (%(event)s, %(queue)s)
        ON CONFLICT DO NOTHING RETURNING event""")
    subscription_remove = _Template("""
        DELETE FROM {schema}.subscription WHERE event = %(event)s AND queue = %(queue)s
        RETURNING event""")
    subscription_list = _Template("""
        SELECT event, queue, created_at FROM {schema}.subscription
        WHERE %(event)s::text IS NULL OR event = %(event)s ORDER BY event, queue""")
    # Many jobs (or one with dead_letter or singleton_next_slot): refuse the whole batch if a
    # queue is missing, insert (singleton conflicts are skipped, and a blocked
    # singleton_next_slot job tries the next slot), then wake workers for the queues that
    # got runnable jobs. Returns one row per input job, in input order.
    job_insert_many = _Template(f"""
        WITH input AS MATERIALIZED (
            SELECT nextval({{job_seq}}) AS id, i.*
            FROM jsonb_to_recordset(%(jobs)s::jsonb) AS i({_INPUT_COLUMNS},
                ord integer, singleton_next_slot boolean)
        ),
        missing AS (
            SELECT name FROM input i
            WHERE NOT EXISTS (SELECT FROM {{schema}}.queue q WHERE q.name = i.name)
            UNION
            SELECT dead_letter FROM input i
            WHERE dead_letter IS NOT NULL
                AND NOT EXISTS (SELECT FROM {{schema}}.queue q WHERE q.name = i.dead_letter)
        ),
        resolved AS (
            SELECT i.id, i.ord, i.singleton_seconds, i.singleton_next_slot, {_RESOLVED_NO_ID}
            FROM input i JOIN {{schema}}.queue q ON q.name = i.name
            WHERE NOT EXISTS (SELECT FROM missing)
        ),
        first AS (
            INSERT INTO {{schema}}.job (id, {_INSERT_COLUMNS_NO_ID})
            SELECT id, {_INSERT_COLUMNS_NO_ID} FROM resolved ORDER BY ord
            ON CONFLICT DO NOTHING
            RETURNING id, name, start_after
        ),
        next_slot AS (
            INSERT INTO {{schema}}.job (id, {_INSERT_COLUMNS_NO_ID})
            SELECT id, name, data, priority, retry_limit, retry_delay, retry_backoff,
                retry_delay_max, expire_in, heartbeat_seconds, delete_after, dead_letter,
                policy, GREATEST(start_after, slot), keep_until + (slot - singleton_on),
                singleton_key, slot
            FROM (SELECT r.*, r.singleton_on + make_interval(secs => r.singleton_seconds)
                      AS slot
                  FROM resolved r
                  WHERE r.singleton_next_slot AND r.singleton_on IS NOT NULL
                      AND NOT EXISTS (SELECT FROM first f WHERE f.id = r.id)) AS s
            ORDER BY ord
            ON CONFLICT DO NOTHING
            RETURNING id, name, start_after
        ),
        inserted AS (SELECT * FROM first UNION ALL SELECT * FROM next_slot)
        SELECT i.ord, n.id,
            (SELECT array_agg(name ORDER BY name) FROM missing) AS missing,
            (SELECT count(pg_notify({{jobs_channel}}, w.name))
             FROM (SELECT DISTINCT name FROM inserted WHERE start_after <= {{now}}) AS w)
                AS notified
        FROM input i LEFT JOIN inserted n ON n.id = i.id
        ORDER BY i.ord""")
    # -- jobs: consuming -------------------------------------------------------------------
    # The ids to claim come as an array from a sub-select (rather than a CTE joined to the
    # table): a plan without a join, about 10% cheaper to make.
    job_fetch = _Template(f"""
        UPDATE {{schema}}.job j
        {_CLAIM_SET}
        WHERE j.id = ANY(ARRAY(
            SELECT id FROM {{schema}}.job
            WHERE name = %(name)s AND state < 'active' AND start_after <= {{now}}
                AND NOT EXISTS (SELECT FROM {{schema}}.queue
                                WHERE name = %(name)s AND paused)
            ORDER BY priority DESC, id
            LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED))
        {_CLAIM_RETURNING}""")
    # Queues with the singleton or stately policy run at most one job per singleton key at
    # a time: fetchers of such a queue take turns (the caller holds queue_fetch_lock in the
    # same transaction), and each claims at most one job per key that has none active. On
    # a stately queue a key's job waiting to retry comes first (its newer jobs wait until
    # it is due and claimed), so the active job of a key can always go back to retry.
    # The candidates are the first %(window)s waiting jobs in fetch order (an index range,
    # however long the queue); the caller widens the window when it was full and yielded
    # fewer than %(limit)s jobs. Keys are checked against jobs outside the window too.
    # Returns the claimed jobs, each with the window's size, or one row of NULLs and the
    # window's size when nothing was claimed.
    queue_fetch_lock = _Template(
        "SELECT pg_advisory_xact_lock(hashtext({fetch_lock_prefix} || %(name)s))"
    )
    queue_fetch_try_lock = _Template("""
        SELECT pg_try_advisory_xact_lock(hashtext({fetch_lock_prefix} || %(name)s)) AS locked""")
    job_fetch_one_per_key = _Template(f"""
        WITH win AS MATERIALIZED (
            SELECT id, priority, start_after, state, policy,
                COALESCE(singleton_key, '') AS key
            FROM {{schema}}.job
            WHERE name = %(name)s AND state < 'active'
                AND (start_after <= {{now}} OR (state = 'retry' AND policy = 'stately'))
            ORDER BY priority DESC, id
            LIMIT %(window)s
        ),
        ranked AS (
            SELECT w.*, row_number() OVER (
                    PARTITION BY w.key
                    ORDER BY (w.state = 'retry' AND w.policy = 'stately') DESC,
                        w.priority DESC, w.id) AS nth
            FROM win w
        ),
        next AS (
            SELECT j.id FROM {{schema}}.job j JOIN ranked r ON r.id = j.id
            WHERE r.nth = 1 AND r.start_after <= {{now}}
                AND NOT EXISTS (SELECT FROM {{schema}}.queue
                                WHERE name = %(name)s AND paused)
                AND NOT EXISTS (
                    SELECT FROM {{schema}}.job a
                    WHERE a.name = %(name)s AND a.state = 'active'
                        AND COALESCE(a.singleton_key, '') = r.key)
                AND (r.policy <> 'stately' OR r.state = 'retry' OR NOT EXISTS (
                    SELECT FROM {{schema}}.job t
                    WHERE t.name = %(name)s AND t.state = 'retry' AND t.policy = 'stately'
                        AND COALESCE(t.singleton_key, '') = r.key))
            ORDER BY r.priority DESC, r.id
            LIMIT %(limit)s
            FOR UPDATE OF j SKIP LOCKED
        ),
        claimed AS ({_CLAIM})
        SELECT claimed.*, scanned.count AS scanned
        FROM (SELECT count(*) FROM win) AS scanned LEFT JOIN claimed ON true""")
    queue_policy = _Template("SELECT policy, paused FROM {schema}.queue WHERE name = %(name)s")
    # Outcomes, heartbeats and releases name the run they belong to: the job's id and its
    # run_id. A run that no longer holds the job (its run_id is not the job's, or the job is
    # no longer active) changes nothing, and its id is not returned. A NULL run (a manual
    # consumer that gave only ids) means whichever run holds the job.
    #
    # %(batch)s is a JSON array of [id, run, output] or [id, run, output, progress]: one
    # parameter however large the batch (arrays of text cost the client far more).
    job_complete_many = _Template("""
        UPDATE {schema}.job j
        SET state = 'completed', completed_at = {now}, output = o.v -> 2,
            progress = CASE WHEN jsonb_array_length(o.v) > 3 THEN o.v -> 3 ELSE j.progress END
        FROM jsonb_array_elements(%(batch)s::jsonb) AS o(v)
        WHERE j.id = (o.v ->> 0)::bigint AND j.state = 'active'
            AND j.run_id = COALESCE((o.v ->> 1)::bigint, j.run_id)
        RETURNING j.id""")
    # A failure moves the job to retry (after its delay) while retries remain and the
    # failure is not terminal, else to its final state (failed, or expired when it ran out
    # of time), where a dead_letter queue gets a copy of it. A stately job whose key
    # already has a job waiting to retry goes to its final state (the policy allows one).
    # A retry's retention starts again from its new start.
    job_fail_many = _Template(f"""
        WITH input AS (
            SELECT f.*, {_RETRY_DELAY} AS delay,
                j.retry_count < j.retry_limit AND NOT f.terminal
                    AND NOT (j.policy = 'stately' AND {_clashes("retry", "'stately'")})
                    AS again
            FROM unnest(%(ids)s::bigint[], %(runs)s::bigint[], %(outputs)s::text[],
                        %(terminal)s::boolean[], %(final_states)s::text[])
                AS f(id, run, output, terminal, final_state)
            JOIN {{schema}}.job j ON j.id = f.id
        ),
        failed AS (
            UPDATE {{schema}}.job j
            SET state = CASE WHEN f.again THEN 'retry'
                    ELSE f.final_state END::{{schema}}.job_state,
                retry_count = j.retry_count + f.again::integer,
                start_after = CASE WHEN f.again THEN {{now}} + f.delay ELSE j.start_after END,
                keep_until = CASE WHEN f.again
                    THEN {{now}} + f.delay + (j.keep_until - j.start_after)
                    ELSE j.keep_until END,
                completed_at = CASE WHEN f.again THEN NULL ELSE {{now}} END,
                output = f.output::jsonb
            FROM input f
            WHERE j.id = f.id AND j.state = 'active'
                AND (f.run IS NULL OR j.run_id = f.run)
            RETURNING j.*
        ),
        dead AS (
            INSERT INTO {{schema}}.job (name, data, priority, keep_until, policy, output)
            SELECT f.dead_letter, f.data, f.priority, {{now}} + interval '14 days',
                COALESCE(q.policy, 'standard'),
                jsonb_build_object('source_queue', f.name, 'source_id', f.id,
                                   'error', f.output)
            FROM failed f JOIN {{schema}}.queue q ON q.name = f.dead_letter
            WHERE f.state > 'active' AND f.state <> 'cancelled'
            ON CONFLICT DO NOTHING
            RETURNING id
        )
        SELECT id, state::text,
            (SELECT count(pg_notify({{jobs_channel}}, d.name))
             FROM (SELECT DISTINCT name FROM failed
                   WHERE state = 'retry' AND start_after <= {{now}}) AS d) AS notified
        FROM failed
        UNION ALL SELECT id, 'dead_letter', 0 FROM dead""")
    # Heartbeats and progress of running jobs, in one statement.
    job_touch_many = _Template("""
        UPDATE {schema}.job j
        SET heartbeat_at = {now}, progress = COALESCE(t.progress::jsonb, j.progress)
        FROM unnest(%(ids)s::bigint[], %(runs)s::bigint[], %(progress)s::text[])
            AS t(id, run, progress)
        WHERE j.id = t.id AND j.state = 'active' AND (t.run IS NULL OR j.run_id = t.run)
        RETURNING j.id""")
    # A stopping worker hands back the jobs it did not finish, to run again at once
    # elsewhere; this is not a failure, so retry_count stays. A stately job whose key
    # already has a job waiting to retry cannot go back (the policy allows one): it fails,
    # saying why, rather than stay active for nobody.
    job_release_many = _Template(f"""
        WITH input AS (
            SELECT r.*, EXISTS (
                    SELECT FROM {{schema}}.job j
                    WHERE j.id = r.id AND j.policy = 'stately'
                        AND {_clashes("retry", "'stately'")}) AS blocked
            FROM unnest(%(ids)s::bigint[], %(runs)s::bigint[]) AS r(id, run)
        ),
        released AS (
            UPDATE {{schema}}.job j
            SET state = CASE WHEN r.blocked THEN 'failed' ELSE 'retry' END::{{schema}}.job_state,
                start_after = CASE WHEN r.blocked THEN j.start_after ELSE {{now}} END,
                keep_until = CASE WHEN r.blocked THEN j.keep_until
                    ELSE {{now}} + (j.keep_until - j.start_after) END,
                started_at = CASE WHEN r.blocked THEN j.started_at END,
                completed_at = CASE WHEN r.blocked THEN {{now}} END,
                output = CASE WHEN r.blocked THEN jsonb_build_object('type', 'released',
                    'message', 'its worker stopped before it finished, and it could not '
                    || 'go back to retry: another job of its singleton key waits to retry '
                    || '(stately policy); retry() it to run it again') ELSE j.output END,
                worker_id = NULL
            FROM input r
            WHERE j.id = r.id AND j.state = 'active' AND j.run_id = r.run
            RETURNING j.id, j.name, j.state
        )
        SELECT id, state::text, (SELECT count(pg_notify({{jobs_channel}}, n.name))
                    FROM (SELECT DISTINCT name FROM released WHERE state = 'retry') AS n)
                AS notified
        FROM released""")
    # The runs the database counts as a worker's: it compares them with the runs it has.
    job_held_by = _Template("""
        SELECT id, run_id FROM {schema}.job
        WHERE state = 'active' AND worker_id = %(worker_id)s""")
    # Cancellation requests for the jobs a worker holds that another session cancelled
    # while its notification was missed: the cancelled runs.
    job_cancelled_among = _Template("""
        SELECT id, run_id FROM {schema}.job
        WHERE id = ANY(%(ids)s::bigint[]) AND state = 'cancelled'""")
    listen_jobs = _Template("LISTEN {jobs_channel_ident}")
    listen_cancel = _Template("LISTEN {cancel_channel_ident}")
    # -- jobs: management ------------------------------------------------------------------
    job_get = _Template(f"""
        SELECT {JOB_COLUMNS}, false AS archived FROM {{schema}}.job WHERE id = %(id)s
        UNION ALL
        SELECT {JOB_COLUMNS}, true AS archived FROM {{schema}}.archive WHERE id = %(id)s
        LIMIT 1""")
    job_cancel_many = _Template("""
        WITH cancelled AS (
            UPDATE {schema}.job
            SET state = 'cancelled', completed_at = {now}
            FROM (SELECT id, state AS old_state FROM {schema}.job
                  WHERE id = ANY(%(ids)s::bigint[]) AND state <= 'active' FOR UPDATE) AS old
            WHERE job.id = old.id
            RETURNING job.id, job.run_id, old.old_state
        )
        SELECT id, (SELECT count(pg_notify({cancel_channel}, a.id || ':' || a.run_id))
                    FROM cancelled a WHERE a.old_state = 'active') AS notified
        FROM cancelled""")
    # Resume and manual retry leave alone the jobs that another job's singleton key, slot
    # or policy limit blocks (they are not in the ids returned).
    job_resume_many = _Template(f"""
        UPDATE {{schema}}.job j
        SET state = 'created', completed_at = NULL, started_at = NULL,
            keep_until = {{now}} + (keep_until - start_after), start_after = {{now}}
        WHERE id = ANY(%(ids)s::bigint[]) AND state = 'cancelled'
            AND NOT {_clashes("created", "'short', 'stately'")}
        RETURNING id""")
    # A failed or expired job runs again, with one more retry allowed if it had used them.
    job_retry_many = _Template(f"""
        UPDATE {{schema}}.job j
        SET state = 'retry', completed_at = NULL, start_after = {{now}},
            retry_limit = GREATEST(retry_limit, retry_count + 1),
            keep_until = {{now}} + (keep_until - start_after)
        WHERE id = ANY(%(ids)s::bigint[]) AND state IN ('failed', 'expired')
            AND NOT {_clashes("retry", "'stately'")}
        RETURNING id""")
    job_delete_many = _Template("""
        WITH j AS (DELETE FROM {schema}.job WHERE id = ANY(%(ids)s::bigint[]) RETURNING id),
             a AS (DELETE FROM {schema}.archive WHERE id = ANY(%(ids)s::bigint[]) RETURNING id)
        SELECT id FROM j UNION SELECT id FROM a""")
    # -- queues ----------------------------------------------------------------------------
    queue_create = _Template("""
        INSERT INTO {schema}.queue (name, policy, retry_limit, retry_delay, retry_backoff,
            retry_delay_max, expire_in, heartbeat_seconds, retention, delete_after,
            dead_letter, description)
        SELECT %(name)s, COALESCE(o.policy, 'standard'), o.retry_limit, o.retry_delay,
            o.retry_backoff, o.retry_delay_max, o.expire_in, o.heartbeat_seconds, o.retention,
            o.delete_after, o.dead_letter, o.description
        FROM jsonb_to_record(%(options)s::jsonb) AS o(policy text, retry_limit integer,
            retry_delay float8, retry_backoff boolean, retry_delay_max float8,
            expire_in float8, heartbeat_seconds float8, retention float8,
            delete_after float8, dead_letter text, description text)
        ON CONFLICT (name) DO NOTHING
        RETURNING name""")
    # Only the options present in %(options)s change; a JSON null clears one.
    queue_update = _Template("""
        UPDATE {schema}.queue q SET
            policy = CASE WHEN %(options)s::jsonb ? 'policy'
                THEN COALESCE(o.policy, 'standard') ELSE q.policy END,
            retry_limit = CASE WHEN %(options)s::jsonb ? 'retry_limit'
                THEN o.retry_limit ELSE q.retry_limit END,
            retry_delay = CASE WHEN %(options)s::jsonb ? 'retry_delay'
                THEN o.retry_delay ELSE q.retry_delay END,
            retry_backoff = CASE WHEN %(options)s::jsonb ? 'retry_backoff'
                THEN o.retry_backoff ELSE q.retry_backoff END,
            retry_delay_max = CASE WHEN %(options)s::jsonb ? 'retry_delay_max'
                THEN o.retry_delay_max ELSE q.retry_delay_max END,
            expire_in = CASE WHEN %(options)s::jsonb ? 'expire_in'
                THEN o.expire_in ELSE q.expire_in END,
            heartbeat_seconds = CASE WHEN %(options)s::jsonb ? 'heartbeat_seconds'
                THEN o.heartbeat_seconds ELSE q.heartbeat_seconds END,
            retention = CASE WHEN %(options)s::jsonb ? 'retention'
                THEN o.retention ELSE q.retention END,
            delete_after = CASE WHEN %(options)s::jsonb ? 'delete_after'
                THEN o.delete_after ELSE q.delete_after END,
            dead_letter = CASE WHEN %(options)s::jsonb ? 'dead_letter'
                THEN o.dead_letter ELSE q.dead_letter END,
            description = CASE WHEN %(options)s::jsonb ? 'description'
                THEN o.description ELSE q.description END,
            updated_at = {now}
        FROM jsonb_to_record(%(options)s::jsonb) AS o(policy text, retry_limit integer,
            retry_delay float8, retry_backoff boolean, retry_delay_max float8,
            expire_in float8, heartbeat_seconds float8, retention float8,
            delete_after float8, dead_letter text, description text)
        WHERE q.name = %(name)s
        RETURNING q.name, q.policy""")
    # A queue's new policy, given to its unfinished jobs (a unique index refuses it when
    # they break the policy's limits).
    job_set_policy = _Template("""
        UPDATE {schema}.job SET policy = %(policy)s
        WHERE name = %(name)s AND state <= 'active' AND policy <> %(policy)s""")
    # A send that read the queue's policy just before a change committed writes its jobs
    # with the old one: they are brought in line when a claim trips over them.
    job_follow_queue_policy = _Template("""
        UPDATE {schema}.job j SET policy = q.policy
        FROM {schema}.queue q
        WHERE q.name = %(name)s AND j.name = q.name AND j.state <= 'active'
            AND j.policy <> q.policy
        RETURNING j.id""")
    queue_delete = _Template("""
        WITH jobs AS (DELETE FROM {schema}.job WHERE name = %(name)s)
        DELETE FROM {schema}.queue WHERE name = %(name)s RETURNING name""")
    queue_get = _Template("SELECT * FROM {schema}.queue WHERE name = %(name)s")
    queue_list = _Template("SELECT * FROM {schema}.queue ORDER BY name")
    queue_set_paused = _Template("""
        WITH changed AS (
            UPDATE {schema}.queue SET paused = %(paused)s, updated_at = {now}
            WHERE name = %(name)s RETURNING name
        )
        SELECT name, CASE WHEN NOT %(paused)s THEN pg_notify({jobs_channel}, name) END
        FROM changed""")
    queue_policies = _Template("""
        SELECT name, policy, paused FROM {schema}.queue WHERE name = ANY(%(names)s::text[])""")
    queue_purge = _Template("""
        DELETE FROM {schema}.job WHERE name = %(name)s AND state < 'active' RETURNING id""")
    # Jobs of a dead-letter queue go back to the queues they failed in, as new jobs. A job
    # whose origin is gone, or whose origin's singleton or policy refuses it, stays put.
    queue_redrive = _Template(f"""
        WITH picked AS MATERIALIZED (
            SELECT id AS old_id, nextval({{job_seq}}) AS id, data, priority,
                output->>'source_queue' AS origin
            FROM (SELECT * FROM {{schema}}.job
                  WHERE name = %(name)s AND state < 'active' AND output ? 'source_queue'
                  ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) AS d
        ),
        inserted AS (
            INSERT INTO {{schema}}.job (id, {_INSERT_COLUMNS_NO_ID})
            SELECT i.id, {_RESOLVED_NO_ID}
            FROM (SELECT m.id,
                      {_input(name="m.origin", data="m.data", priority="m.priority")}
                  FROM picked m) AS i
            JOIN {{schema}}.queue q ON q.name = i.name
            ON CONFLICT DO NOTHING
            RETURNING id, name
        ),
        moved AS (
            DELETE FROM {{schema}}.job
            WHERE id IN (SELECT m.old_id FROM picked m JOIN inserted n ON n.id = m.id)
        )
        SELECT id, (SELECT count(pg_notify({{jobs_channel}}, d.name))
                    FROM (SELECT DISTINCT name FROM inserted) AS d) AS notified
        FROM inserted""")
    queue_stats = _Template("""
        SELECT q.name, j.state::text AS state, count(j.id) AS count,
            extract(epoch FROM {now} - min(j.created_at)
                FILTER (WHERE j.state < 'active' AND j.start_after <= {now}))::float8
                AS oldest_waiting
        FROM {schema}.queue q LEFT JOIN {schema}.job j ON j.name = q.name
        WHERE %(name)s::text IS NULL OR q.name = %(name)s
        GROUP BY q.name, j.state ORDER BY q.name""")
    # -- schedules -------------------------------------------------------------------------
    # A changed cron or time zone restarts the schedule from %(last_slot)s (the latest slot
    # at declaration), so it neither fires at once nor replays old slots.
    schedule_upsert = _Template("""
        INSERT INTO {schema}.schedule (name, cron, tz, data, options, from_code, last_slot)
        VALUES (%(name)s, %(cron)s, %(tz)s, %(data)s::jsonb, %(options)s::jsonb,
                %(from_code)s, %(last_slot)s)
        ON CONFLICT (name) DO UPDATE SET
            cron = EXCLUDED.cron, tz = EXCLUDED.tz, data = EXCLUDED.data,
            options = EXCLUDED.options, from_code = EXCLUDED.from_code, updated_at = {now},
            last_slot = CASE WHEN schedule.cron = EXCLUDED.cron AND schedule.tz = EXCLUDED.tz
                THEN schedule.last_slot ELSE EXCLUDED.last_slot END
        RETURNING name""")
    schedule_delete = _Template(
        "DELETE FROM {schema}.schedule WHERE name = %(name)s RETURNING name"
    )
    # Schedules declared in code by an earlier version of the application and no longer.
    schedule_prune_code = _Template("""
        DELETE FROM {schema}.schedule
        WHERE from_code AND NOT (name = ANY(%(names)s::text[])) RETURNING name""")
    schedule_list = _Template("""
        SELECT name, cron, tz, data, options, from_code, last_slot, created_at, updated_at
        FROM {schema}.schedule ORDER BY name""")
    # Compare-and-set: only the instance that moves last_slot forward sends the slot's job.
    # A slot is claimed only once it has come by the clock, whatever the caller's clock.
    schedule_claim_slot = _Template("""
        UPDATE {schema}.schedule SET last_slot = %(slot)s
        WHERE name = %(name)s AND cron = %(cron)s AND tz = %(tz)s
            AND (last_slot IS NULL OR last_slot < %(slot)s) AND %(slot)s <= {now}
        RETURNING name, data, options""")
    # -- the clock -------------------------------------------------------------------------
    clock_now = _Template("SELECT {now} AS now")
    # Moving the clock replaces the schema's clock function (a constant offset keeps it
    # inlinable): for tests, and it moves time for every instance on the schema.
    clock_set_offset = _Template("SELECT {schema}.set_clock_offset(%(seconds)s::float8)")
    clock_set_at = _Template("""
        SELECT {schema}.set_clock_offset(
            extract(epoch FROM %(at)s::timestamptz - statement_timestamp())::float8)""")
    clock_move = _Template("""
        SELECT {schema}.set_clock_offset(
            extract(epoch FROM {now} - statement_timestamp())::float8 + %(seconds)s::float8)""")
    # -- maintenance -----------------------------------------------------------------------
    # Each pass runs under a transaction-level advisory lock, so two instances never run the
    # same pass at once; every step takes a bounded batch, locked with SKIP LOCKED, and is
    # idempotent.
    maintenance_lock = _Template(
        "SELECT pg_try_advisory_xact_lock(hashtext({maintenance_key})) AS locked"
    )
    maintenance_step_begin = _Template("SAVEPOINT pgqueue_maintenance_step")
    maintenance_step_end = _Template("RELEASE SAVEPOINT pgqueue_maintenance_step")
    maintenance_step_undo = _Template("ROLLBACK TO SAVEPOINT pgqueue_maintenance_step")
    # The periodic pass, once per %(interval)s seconds cluster-wide (database time, so the
    # instances' clocks need not agree): it runs if it moves maintained_on forward.
    maintenance_due = _Template("""
        UPDATE {schema}.version SET maintained_on = {now}
        WHERE version = (SELECT max(version) FROM {schema}.version)
            AND (maintained_on IS NULL OR maintained_on > {now}
                 OR maintained_on <= {now} - make_interval(secs => %(interval)s))
        RETURNING version""")
    # Active jobs past expire_in, or whose heartbeat went stale (their worker died): the
    # caller fails them with job_fail_many, to retry or expired.
    job_stale_select = _Template("""
        SELECT id, run_id FROM {schema}.job
        WHERE state = 'active' AND (
            started_at + make_interval(secs => LEAST(expire_in, {max_seconds})) < {now}
            OR COALESCE(heartbeat_at, started_at)
                + make_interval(secs => LEAST(run_heartbeat, {max_seconds})) < {now})
        ORDER BY started_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED""")
    # Jobs that waited longer than their retention without starting.
    job_expire_waiting = _Template("""
        WITH late AS (
            SELECT id FROM {schema}.job
            WHERE state < 'active' AND keep_until < {now}
            ORDER BY keep_until
            LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED
        )
        UPDATE {schema}.job j
        SET state = 'expired', completed_at = {now},
            output = jsonb_build_object('type', 'expired',
                                        'message', 'waited past its retention without starting')
        FROM late WHERE j.id = late.id
        RETURNING j.id""")
    # Finished jobs move to the archive: completed ones %(completed_after)s seconds after
    # they finished, failed, cancelled and expired ones after %(failed_after)s; each is a
    # range of job_finished_state_idx, so rows not yet due are never read.
    job_archive = _Template(f"""
        WITH completed AS MATERIALIZED (
            SELECT id FROM {{schema}}.job
            WHERE state = 'completed'
                AND completed_at < {{now}} - make_interval(secs => %(completed_after)s)
            LIMIT %(limit)s FOR UPDATE SKIP LOCKED
        ),
        ended AS MATERIALIZED (
            SELECT id FROM {{schema}}.job
            WHERE state IN ('expired', 'cancelled', 'failed')
                AND completed_at < {{now}} - make_interval(secs => %(failed_after)s)
            LIMIT GREATEST(%(limit)s - (SELECT count(*) FROM completed), 0)
            FOR UPDATE SKIP LOCKED
        ),
        moved AS (
            DELETE FROM {{schema}}.job
            WHERE id IN (SELECT id FROM completed UNION ALL SELECT id FROM ended)
            RETURNING *
        )
        INSERT INTO {{schema}}.archive ({_ALL_JOB_COLUMNS}, archived_at, delete_at)
        SELECT {_ALL_JOB_COLUMNS}, {{now}},
            {{now}} + make_interval(secs => LEAST(delete_after, {{max_seconds}}))
        FROM moved
        RETURNING id""")
    archive_delete = _Template("""
        DELETE FROM {schema}.archive
        WHERE id IN (
            SELECT id FROM {schema}.archive
            WHERE delete_at < {now}
            ORDER BY delete_at
            LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED)
        RETURNING id""")

    def __init__(self, schema: str) -> None:
        self.schema = schema
        ident = sql.Identifier(schema)
        params = {
            "schema": ident,
            "job_seq": sql.Literal(sql.Composed([ident, sql.SQL(".job_id_seq")]).as_string()),
            "version_table": sql.Literal(sql.Composed([ident, sql.SQL(".version")]).as_string()),
            "schema_name": sql.Literal(ident.as_string()),
            "lock_key": sql.Literal(f"pgqueue.migrate.{schema}"),
            "maintenance_key": sql.Literal(f"pgqueue.maintain.{schema}"),
            "fetch_lock_prefix": sql.Literal(f"pgqueue.fetch.{schema}."),
            "jobs_channel": sql.Literal(self.jobs_channel),
            "cancel_channel": sql.Literal(self.cancel_channel),
            "jobs_channel_ident": sql.Identifier(self.jobs_channel),
            "cancel_channel_ident": sql.Identifier(self.cancel_channel),
            "now": sql.Composed([ident, sql.SQL(".clock()")]),
            "max_seconds": sql.Literal(MAX_SECONDS),
        }
        self._rendered = {
            name: sql.SQL(template.text).format(**params).as_string()
            for name, template in self.templates().items()
        }
        # Plain attributes from now on (they shadow the templates, which only define
        # __get__): a statement is read on every claim and completion.
        self.__dict__.update(self._rendered)

    @classmethod
    def templates(cls) -> dict[str, _Template]:
        """Every statement's template by name, in the order they are defined."""
        return {name: value for name, value in vars(cls).items() if isinstance(value, _Template)}

    @property
    def jobs_channel(self) -> str:
        """The NOTIFY channel that announces runnable jobs (payload: queue name)."""
        return f"{self.schema}_jobs"

    @property
    def cancel_channel(self) -> str:
        """The NOTIFY channel that announces cancelled active jobs (payload: job id)."""
        return f"{self.schema}_cancel"

    def grant(self, role: str) -> str:
        """The statements that let ``role`` run pgqueue on this schema: produce, work,
        maintain and run cron; not migrate, nor move the clock (see docs/operations.md)."""
        return (
            sql.SQL(_GRANT)
            .format(schema=sql.Identifier(self.schema), role=sql.Identifier(role))
            .as_string()
        )

    def migration(self, text: str) -> str:
        """A migration file's text with the schema filled in."""
        return sql.SQL(text).format(schema=sql.Identifier(self.schema)).as_string()
