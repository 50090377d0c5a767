"""Statements on queues, subscriptions and schedules."""

from __future__ import annotations

from .fragments import GROUPED, INSERT_COLUMNS_NO_ID, LIMITED, RESOLVED_NO_ID, job_input
from .template import Template

__all__ = ["QueueStatements"]

# The options a queue is created or updated with, as a JSON record.
_QUEUE_OPTIONS = """policy text, retry_limit integer, retry_delay float8,
    retry_backoff boolean, retry_delay_max float8, expire_in float8, heartbeat_seconds float8,
    retention float8, delete_after float8, dead_letter text, description text,
    concurrency integer, rate_limit jsonb, group_concurrency integer, ordered boolean,
    group_rate_limit jsonb"""
# A queue as QueueInfo shows it.
_QUEUE_INFO = """name, policy, retry_limit, retry_delay, retry_backoff, retry_delay_max,
    expire_in, heartbeat_seconds, retention, delete_after, dead_letter, description, paused,
    created_at, updated_at, concurrency, group_concurrency, ordered, rate_count, rate_seconds,
    group_rate_count, group_rate_seconds"""


class QueueStatements:
    """Statements on queues, subscriptions and schedules."""

    # -- queues ----------------------------------------------------------------------------
    # Workers are told ("<name> changed"): one may hold the rules of a queue of that name
    # that was deleted.
    queue_create = Template(f"""
        INSERT INTO {{schema}}.queue (name, policy, retry_limit, retry_delay, retry_backoff,
            retry_delay_max, expire_in, heartbeat_seconds, retention, delete_after,
            dead_letter, description, concurrency, rate_count, rate_seconds,
            group_concurrency, ordered, group_rate_count, group_rate_seconds)
        SELECT %(name)s, COALESCE(o.policy, 'standard'), o.retry_limit, o.retry_delay,
            o.retry_backoff, o.retry_delay_max, o.expire_in, o.heartbeat_seconds, o.retention,
            o.delete_after, o.dead_letter, o.description, o.concurrency,
            (o.rate_limit ->> 0)::integer, (o.rate_limit ->> 1)::float8, o.group_concurrency,
            COALESCE(o.ordered, false), (o.group_rate_limit ->> 0)::integer,
            (o.group_rate_limit ->> 1)::float8
        FROM jsonb_to_record(%(options)s::jsonb) AS o({_QUEUE_OPTIONS})
        ON CONFLICT (name) DO NOTHING
        RETURNING name, pg_notify({{jobs_channel}}, name || ' changed')""")
    # Only the options present in %(options)s change; a JSON null clears one. Workers are
    # told ("<name> changed"), to read the queue's rules again.
    queue_update = Template(f"""
        UPDATE {{schema}}.queue q SET
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
            concurrency = CASE WHEN %(options)s::jsonb ? 'concurrency'
                THEN o.concurrency ELSE q.concurrency END,
            rate_count = CASE WHEN %(options)s::jsonb ? 'rate_limit'
                THEN (o.rate_limit ->> 0)::integer ELSE q.rate_count END,
            rate_seconds = CASE WHEN %(options)s::jsonb ? 'rate_limit'
                THEN (o.rate_limit ->> 1)::float8 ELSE q.rate_seconds END,
            group_concurrency = CASE WHEN %(options)s::jsonb ? 'group_concurrency'
                THEN o.group_concurrency ELSE q.group_concurrency END,
            ordered = CASE WHEN %(options)s::jsonb ? 'ordered'
                THEN COALESCE(o.ordered, false) ELSE q.ordered END,
            group_rate_count = CASE WHEN %(options)s::jsonb ? 'group_rate_limit'
                THEN (o.group_rate_limit ->> 0)::integer ELSE q.group_rate_count END,
            group_rate_seconds = CASE WHEN %(options)s::jsonb ? 'group_rate_limit'
                THEN (o.group_rate_limit ->> 1)::float8 ELSE q.group_rate_seconds END,
            updated_at = {{now}}
        FROM jsonb_to_record(%(options)s::jsonb) AS o({_QUEUE_OPTIONS})
        WHERE q.name = %(name)s
        RETURNING q.name, q.policy, pg_notify({{jobs_channel}}, q.name || ' changed')""")
    # A queue's new policy, given to its unfinished jobs (a unique index refuses it when
    # they break the policy's limits).
    job_set_policy = Template("""
        UPDATE {schema}.job SET policy = %(policy)s
        WHERE name = %(name)s AND state <= 'active' AND policy <> %(policy)s""")
    # A send that read the queue's policy just before a change committed writes its jobs
    # with the old one: they are brought in line when a claim trips over them.
    job_follow_queue_policy = Template("""
        UPDATE {schema}.job j SET policy = q.policy
        FROM {schema}.queue q
        WHERE q.name = %(name)s AND j.name = q.name AND j.state <= 'active'
            AND j.policy <> q.policy
        RETURNING j.id""")
    queue_delete = Template("""
        WITH jobs AS (DELETE FROM {schema}.job WHERE name = %(name)s)
        DELETE FROM {schema}.queue WHERE name = %(name)s RETURNING name""")
    # The deleted queue's partition of the job table, in the partitioned layout (a statement
    # cannot drop a table it used, so this follows queue_delete).
    queue_partition_drop = Template("SELECT {schema}.job_partition_drop(%(name)s) AS dropped")
    queue_get = Template(f"SELECT {_QUEUE_INFO} FROM {{schema}}.queue WHERE name = %(name)s")
    queue_list = Template(f"SELECT {_QUEUE_INFO} FROM {{schema}}.queue ORDER BY name")
    queue_set_paused = Template("""
        WITH changed AS (
            UPDATE {schema}.queue SET paused = %(paused)s, updated_at = {now}
            WHERE name = %(name)s RETURNING name
        )
        SELECT name, CASE WHEN NOT %(paused)s THEN pg_notify({jobs_channel}, name) END
        FROM changed""")
    # A worker's look at its queues, in one statement however many it serves: each one's
    # rules, and whether it has a due waiting job (only those are claimed from). The look
    # for a due job is a range of job_fetch_idx, deferred jobs passed over on its entries.
    # Its queues are those named, and those whose names match one of %(patterns)s (regular
    # expressions: the queues its pattern handlers may serve).
    queue_rules = Template(f"""
        SELECT name, policy, paused, {LIMITED} AS limited,
            EXISTS (SELECT FROM {{schema}}.job j
                    WHERE j.name = q.name AND j.state < 'active'
                        AND j.start_after <= {{now}}) AS due
        FROM {{schema}}.queue q
        WHERE name = ANY(%(names)s::text[]) OR name ~ ANY(%(patterns)s::text[])""")
    queue_purge = Template("""
        DELETE FROM {schema}.job WHERE name = %(name)s AND state < 'active' RETURNING id""")
    # Jobs of a dead-letter queue go back to the queues they failed in, as new jobs. A job
    # whose origin is gone, or whose origin's singleton or policy refuses it, stays put.
    queue_redrive = Template(f"""
        WITH picked AS MATERIALIZED (
            SELECT id AS old_id, nextval({{job_seq}}) AS id, data, priority, group_key,
                output->>'source_queue' AS origin
            FROM (SELECT * FROM {{schema}}.job
                  WHERE name = %(name)s AND state < 'active' AND output ? 'source_queue'
                  ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) AS d
        ),
        inserted AS (
            INSERT INTO {{schema}}.job (id, {INSERT_COLUMNS_NO_ID})
            SELECT i.id, {RESOLVED_NO_ID}
            FROM (SELECT m.id,
                      {
        job_input(name="m.origin", data="m.data", priority="m.priority", group_key="m.group_key")
    }
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
    # The jobs are counted per queue and state before the queues join them: one pass over
    # the job table (in parallel where the server allows), not a join of every row.
    queue_stats = Template(f"""
        SELECT q.name, c.state::text AS state, COALESCE(c.count, 0) AS count,
            c.oldest_waiting, q.concurrency, q.rate_count, q.rate_seconds, r.rate_used,
            q.group_concurrency, q.ordered, q.group_rate_count, q.group_rate_seconds,
            {GROUPED} AS grouped
        FROM {{schema}}.queue q
        CROSS JOIN LATERAL (
            SELECT count(*) AS rate_used FROM unnest(q.rate_starts) s
            WHERE s > {{now}} - make_interval(secs => q.rate_seconds) AND s <= {{now}}) AS r
        LEFT JOIN (
            SELECT j.name, j.state, count(*) AS count,
                extract(epoch FROM {{now}} - min(j.created_at)
                    FILTER (WHERE j.state < 'active' AND j.start_after <= {{now}}))::float8
                    AS oldest_waiting
            FROM {{schema}}.job j
            WHERE %(name)s::text IS NULL OR j.name = %(name)s
            GROUP BY j.name, j.state) AS c ON c.name = q.name
        WHERE %(name)s::text IS NULL OR q.name = %(name)s
        ORDER BY q.name""")
    # The groups of a queue with the most waiting jobs, their active jobs, and their starts
    # in the window of the queue's group rate limit (%(seconds)s; 0 without one).
    queue_group_stats = Template("""
        SELECT g.*, (SELECT count(*) FROM {schema}.group_rate r, unnest(r.starts) s
                     WHERE r.name = %(name)s AND r.group_key = g.group_key
                         AND s > {now} - make_interval(secs => %(seconds)s::float8)
                         AND s <= {now}) AS rate_used
        FROM (SELECT group_key, count(*) FILTER (WHERE state < 'active') AS waiting,
                  count(*) FILTER (WHERE state = 'active') AS active
              FROM {schema}.job
              WHERE name = %(name)s AND state <= 'active' AND group_key IS NOT NULL
              GROUP BY group_key ORDER BY waiting DESC, group_key LIMIT %(top)s) g
        ORDER BY g.waiting DESC, g.group_key""")
    # Jobs that finished in each of the last %(buckets)s windows of %(width)s seconds, per
    # queue (bucket 0 is the latest): each state a range of job_finished_state_idx, so only
    # the window's rows are read. Finished jobs still in the job table only (completed ones
    # move to the archive an hour after they end, by default).
    queue_throughput = Template("""
        SELECT name, floor(extract(epoch FROM {now} - completed_at)
                / %(width)s::float8)::integer AS bucket,
            count(*) FILTER (WHERE state = 'completed') AS completed,
            count(*) FILTER (WHERE state <> 'completed') AS failed
        FROM {schema}.job
        WHERE state > 'active' AND state IN ('completed', 'failed', 'expired')
            AND completed_at > {now} - make_interval(secs => %(width)s::float8 * %(buckets)s)
            AND completed_at <= {now}
            AND (%(name)s::text IS NULL OR name = %(name)s)
        GROUP BY name, bucket ORDER BY name, bucket""")
    # -- schedules -------------------------------------------------------------------------
    # A changed cron or time zone restarts the schedule from %(last_slot)s (the latest slot
    # at declaration), so it neither fires at once nor replays old slots.
    schedule_upsert = Template("""
        INSERT INTO {schema}.schedule (name, key, cron, tz, data, options, from_code, last_slot)
        VALUES (%(name)s, %(key)s, %(cron)s, %(tz)s, %(data)s::jsonb, %(options)s::jsonb,
                %(from_code)s, %(last_slot)s)
        ON CONFLICT (name, key) DO UPDATE SET
            cron = EXCLUDED.cron, tz = EXCLUDED.tz, data = EXCLUDED.data,
            options = EXCLUDED.options, from_code = EXCLUDED.from_code, updated_at = {now},
            last_slot = CASE WHEN schedule.cron = EXCLUDED.cron AND schedule.tz = EXCLUDED.tz
                THEN schedule.last_slot ELSE EXCLUDED.last_slot END
        RETURNING name""")
    schedule_delete = Template("""
        DELETE FROM {schema}.schedule WHERE name = %(name)s AND key = %(key)s RETURNING name""")
    # Schedules declared in code by an earlier version of the application and no longer
    # (%(names)s and %(keys)s: the pairs declared now).
    schedule_prune_code = Template("""
        DELETE FROM {schema}.schedule
        WHERE from_code AND (name, key) NOT IN (
            SELECT * FROM unnest(%(names)s::text[], %(keys)s::text[]))
        RETURNING name""")
    schedule_list = Template("""
        SELECT name, key, cron, tz, data, options, from_code, last_slot, created_at, updated_at
        FROM {schema}.schedule ORDER BY name, key""")
    # Compare-and-set: only the instance that moves last_slot forward sends the slot's job.
    # A slot is claimed only once it has come by the clock, whatever the caller's clock.
    schedule_claim_slot = Template("""
        UPDATE {schema}.schedule SET last_slot = %(slot)s
        WHERE name = %(name)s AND key = %(key)s AND cron = %(cron)s AND tz = %(tz)s
            AND (last_slot IS NULL OR last_slot < %(slot)s) AND %(slot)s <= {now}
        RETURNING name, data, options""")
    # The clock went back before a schedule's last sent slot: it restarts from %(slot)s (the
    # latest slot by the clock now), else it would wait for the clock to pass that slot again.
    schedule_rewind = Template("""
        UPDATE {schema}.schedule SET last_slot = %(slot)s
        WHERE name = %(name)s AND key = %(key)s AND last_slot > {now}
        RETURNING name""")
