"""Statements that keep a schema going: migrations, the clock, maintenance."""

from __future__ import annotations

from .fragments import ALL_JOB_COLUMNS
from .template import Template

__all__ = ["UpkeepStatements"]


class UpkeepStatements:
    """Statements that keep a schema going: migrations, the clock, maintenance."""

    # -- migrations ------------------------------------------------------------------------
    # Transaction-level: held by each migration's transaction, never by the session.
    lock_migrations = Template("SELECT pg_advisory_xact_lock(hashtext({lock_key}))")
    # A statement time limit for the transaction only (what a pooler passes on safely).
    timeout_set_local = Template(
        "SELECT set_config('statement_timeout', %(ms)s::integer::text, true)"
    )
    begin = Template("BEGIN")
    commit = Template("COMMIT")
    rollback = Template("ROLLBACK")
    # Created only when missing: CREATE SCHEMA IF NOT EXISTS needs CREATE on the database
    # even when the schema exists, which the schema's owner may well not have.
    schema_exists = Template("SELECT to_regnamespace({schema_name}) IS NOT NULL AS exists")
    schema_create = Template("CREATE SCHEMA IF NOT EXISTS {schema}")
    schema_create_new = Template("CREATE SCHEMA {schema}")
    schema_drop = Template("DROP SCHEMA IF EXISTS {schema} CASCADE")
    # Whether SQL writes a name without quotes (pg_dump does then).
    name_plain = Template("SELECT quote_ident(%(name)s) = %(name)s AS plain")
    version_create = Template("""
        CREATE TABLE IF NOT EXISTS {schema}.version (
            version integer PRIMARY KEY,
            name text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )""")
    version_table_exists = Template("SELECT to_regclass({version_table}) IS NOT NULL AS exists")
    version_current = Template("SELECT max(version) AS version FROM {schema}.version")
    # True when the job table is partitioned by queue (the partitioned layout).
    job_table_partitioned = Template("""
        SELECT coalesce((SELECT relkind = 'p' FROM pg_catalog.pg_class
                         WHERE oid = to_regclass({job_table})), false) AS partitioned""")
    version_insert = Template(
        "INSERT INTO {schema}.version (version, name) VALUES (%(version)s, %(name)s)"
    )
    version_insert_many = Template("""
        INSERT INTO {schema}.version (version, name)
        SELECT * FROM unnest(%(versions)s::integer[], %(names)s::text[])""")

    # -- the clock -------------------------------------------------------------------------
    clock_now = Template("SELECT {now} AS now")
    # Moving the clock replaces the schema's clock function (a constant offset keeps it
    # inlinable): for tests, and it moves time for every instance on the schema.
    clock_set_offset = Template("SELECT {schema}.set_clock_offset(%(seconds)s::float8)")
    clock_set_at = Template("""
        SELECT {schema}.set_clock_offset(
            extract(epoch FROM %(at)s::timestamptz - statement_timestamp())::float8)""")
    clock_move = Template("""
        SELECT {schema}.set_clock_offset(
            extract(epoch FROM {now} - statement_timestamp())::float8 + %(seconds)s::float8)""")
    # -- maintenance -----------------------------------------------------------------------
    # Each pass runs under a transaction-level advisory lock, so two instances never run the
    # same pass at once; every step takes a bounded batch, locked with SKIP LOCKED, and is
    # idempotent.
    maintenance_lock = Template(
        "SELECT pg_try_advisory_xact_lock(hashtext({maintenance_key})) AS locked"
    )
    # A step of a plan that can be undone alone (a maintenance step, a flow's insert).
    step_begin = Template("SAVEPOINT pgqueue_step")
    step_end = Template("RELEASE SAVEPOINT pgqueue_step")
    step_undo = Template("ROLLBACK TO SAVEPOINT pgqueue_step")
    # The periodic pass, once per %(interval)s seconds cluster-wide (database time, so the
    # instances' clocks need not agree): it runs if it moves maintained_on forward.
    maintenance_due = Template("""
        UPDATE {schema}.version SET maintained_on = {now}
        WHERE version = (SELECT max(version) FROM {schema}.version)
            AND (maintained_on IS NULL OR maintained_on > {now}
                 OR maintained_on <= {now} - make_interval(secs => %(interval)s))
        RETURNING version""")
    # Active jobs past expire_in, or whose heartbeat went stale (their worker died): the
    # caller fails them with job_fail_many, to retry or expired.
    job_stale_select = Template("""
        SELECT id, run_id FROM {schema}.job
        WHERE state = 'active' AND (
            started_at + make_interval(secs => LEAST(expire_in, {max_seconds})) < {now}
            OR COALESCE(heartbeat_at, started_at)
                + make_interval(secs => LEAST(run_heartbeat, {max_seconds})) < {now})
        ORDER BY started_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED""")
    # Jobs that waited longer than their retention without starting.
    job_expire_waiting = Template("""
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
    job_archive = Template(f"""
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
        INSERT INTO {{schema}}.archive ({ALL_JOB_COLUMNS}, archived_at, delete_at)
        SELECT {ALL_JOB_COLUMNS}, {{now}},
            {{now}} + make_interval(secs => LEAST(delete_after, {{max_seconds}}))
        FROM moved
        RETURNING id""")
    archive_delete = Template("""
        DELETE FROM {schema}.archive
        WHERE id IN (
            SELECT id FROM {schema}.archive
            WHERE delete_at < {now}
            ORDER BY delete_at
            LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED)
        RETURNING id""")
    # Groups' rate windows that hold no start any more (or whose queue has no group rate
    # limit now): a claim starts a new one when the group runs again. (The test is on the
    # row itself, so a claim's concurrent write is seen before the row is deleted.)
    # The waits of jobs that no longer wait: released, or cancelled or deleted meanwhile.
    job_wait_prune = Template("""
        DELETE FROM {schema}.job_wait w
        WHERE w.job_id IN (
            SELECT v.job_id FROM {schema}.job_wait v
            WHERE v.parents_left <= 0
                OR NOT EXISTS (SELECT FROM {schema}.job j
                               WHERE j.id = v.job_id AND j.state = 'created')
            LIMIT %(limit)s)
        RETURNING w.job_id""")
    # The edges to jobs that no longer wait (their waits pruned above).
    job_edge_prune = Template("""
        DELETE FROM {schema}.job_edge e
        WHERE (e.parent_id, e.job_id) IN (
            SELECT f.parent_id, f.job_id FROM {schema}.job_edge f
            WHERE NOT EXISTS (SELECT FROM {schema}.job_wait w WHERE w.job_id = f.job_id)
            LIMIT %(limit)s)
        RETURNING e.job_id""")
    group_rate_prune = Template("""
        DELETE FROM {schema}.group_rate r
        USING {schema}.queue q
        WHERE q.name = r.name
            AND (q.group_rate_seconds IS NULL
                 OR NOT EXISTS (SELECT FROM unnest(r.starts) s
                                WHERE s > {now} - make_interval(secs => q.group_rate_seconds)))
        RETURNING r.name""")
