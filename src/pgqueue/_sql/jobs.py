"""Statements on jobs: producing, consuming and managing them."""

from __future__ import annotations

from .fragments import (
    CLAIM,
    CLAIM_RETURNING,
    CLAIM_SET,
    GROUPED,
    HELD,
    INPUT_COLUMNS,
    INSERT_COLUMNS_NO_ID,
    JOB_COLUMNS,
    LIMITED,
    MAX_ERRORS,
    RESOLVED_NO_ID,
    RETRY_DELAY,
    SINGLE_INPUT,
    clashes,
    held_values,
    in_state,
    job_input,
    kept_starts,
    logged,
)
from .template import Template

__all__ = ["FIND_FILTERS", "FIND_KINDS", "JobStatements", "find_statement", "state_kind"]

# find_jobs: each filter given narrows the jobs. The statement names only those given, and
# is planned for its values (never prepared), so a small queue's jobs are read through its
# ranges of the indexes below and a large one's through the primary key in id order.
FIND_FILTERS = {
    "name": "name = %(name)s",
    "states": "state = ANY(%(states)s::{schema}.job_state[])",
    "key": "singleton_key = %(key)s",
    "group": "group_key = %(group)s",
    "data": "data @> %(data)s::jsonb",
}
# A queue's jobs in the job table, by the kind of state they are in, each kind read in id
# order through an index of its own: waiting ones through the fetch index, active ones
# through job_active_idx (there are few), finished ones through job_name_id_idx. (One index
# on (name, id) for every state would be written at every claim and every completion.)
FIND_KINDS = {
    "waiting": "state < 'active'",
    "active": "state = 'active'",
    "finished": "state > 'active'",
}


def state_kind(state: str) -> str:
    """The kind (of FIND_KINDS) of a job state."""
    return {"created": "waiting", "retry": "waiting", "active": "active"}.get(state, "finished")


def find_statement(filters: tuple[str, ...], archived: bool, kinds: tuple[str, ...] = ()) -> str:
    """The find_jobs statement for the given filters (names of FIND_FILTERS): jobs after
    %(after)s in id order, at most %(limit)s, read from the job table for each of ``kinds``
    (names of FIND_KINDS; none: in one read), and from the archive too when ``archived``."""
    where = "".join(f" AND {FIND_FILTERS[f]}" for f in filters)
    reads = [("job", "false", f" AND {FIND_KINDS[k]}") for k in kinds] or [("job", "false", "")]
    if archived:
        reads.append(("archive", "true", ""))
    parts = [
        f"(SELECT {JOB_COLUMNS}, {flag} AS archived FROM {{schema}}.{table}"
        f" WHERE id > %(after)s{where}{kind} ORDER BY id LIMIT %(limit)s)"
        for table, flag, kind in reads
    ]
    if len(parts) == 1:
        return parts[0]
    return f"SELECT * FROM ({' UNION ALL '.join(parts)}) AS found ORDER BY id LIMIT %(limit)s"


class JobStatements:
    """Statements on jobs: producing, consuming and managing them."""

    # -- jobs: producing -------------------------------------------------------------------
    # One job, the common case: options resolved against its queue, inserted unless a
    # singleton or policy index blocks it, workers woken if it can run now. No row back
    # means blocked, or no such queue (the caller then looks with queue_exists).
    job_insert = Template(f"""
        WITH inserted AS (
            INSERT INTO {{schema}}.job ({INSERT_COLUMNS_NO_ID})
            SELECT {RESOLVED_NO_ID}
            FROM (SELECT {SINGLE_INPUT}) AS i
            JOIN {{schema}}.queue q ON q.name = i.name
            ON CONFLICT DO NOTHING
            RETURNING id, name, start_after
        )
        SELECT id, CASE WHEN start_after <= {{now}}
            THEN pg_notify({{jobs_channel}}, name) END AS notified
        FROM inserted""")
    queue_exists = Template(
        "SELECT EXISTS (SELECT FROM {schema}.queue WHERE name = %(name)s) AS exists"
    )
    # Publish: one job per queue subscribed to %(event)s, in one statement.
    job_publish = Template(f"""
        WITH inserted AS (
            INSERT INTO {{schema}}.job ({INSERT_COLUMNS_NO_ID})
            SELECT {RESOLVED_NO_ID}
            FROM (SELECT {job_input(name="s.queue")} FROM {{schema}}.subscription s
                  WHERE s.event = %(event)s) AS i
            JOIN {{schema}}.queue q ON q.name = i.name
            ON CONFLICT DO NOTHING
            RETURNING id, name, start_after
        )
        SELECT id, name, (SELECT count(pg_notify({{jobs_channel}}, w.name))
                          FROM (SELECT DISTINCT name FROM inserted
                                WHERE start_after <= {{now}}) AS w) AS notified
        FROM inserted ORDER BY name""")
    subscription_add = Template("""
        INSERT INTO {schema}.subscription (event, queue) VALUES (%(event)s, %(queue)s)
        ON CONFLICT DO NOTHING RETURNING event""")
    subscription_remove = Template("""
        DELETE FROM {schema}.subscription WHERE event = %(event)s AND queue = %(queue)s
        RETURNING event""")
    subscription_list = Template("""
        SELECT event, queue, created_at FROM {schema}.subscription
        WHERE %(event)s::text IS NULL OR event = %(event)s ORDER BY event, queue""")
    # Many jobs (or one with dead_letter, singleton_next_slot or parents): refuse the whole
    # batch if a queue is missing, insert (singleton conflicts are skipped, and a blocked
    # singleton_next_slot job tries the next slot), then wake workers for the queues that
    # got runnable jobs. Returns one row per input job, in input order.
    # Jobs with parents come with ids drawn by job_depend and what it found: the parents
    # they wait for (held until then, with a row in job_wait and an edge from each of those
    # parents in job_edge), whether other jobs
    # of the batch depend on them (a flow: if such a job is blocked the statement fails,
    # as its dependents would wait for nothing), or the reason they are born cancelled.
    job_insert_many = Template(f"""
        WITH input AS MATERIALIZED (
            SELECT COALESCE(i.given_id, nextval({{job_seq}})) AS id, i.*
            FROM jsonb_to_recordset(%(jobs)s::jsonb) AS i({INPUT_COLUMNS},
                ord integer, singleton_next_slot boolean, given_id bigint,
                depends_on bigint[], dependents boolean, waits_for bigint[],
                run_anyway boolean, ended jsonb)
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
            SELECT i.id, i.ord, i.singleton_seconds, i.singleton_next_slot, i.depends_on,
                COALESCE(i.dependents, false) AS dependents,
                COALESCE(cardinality(i.waits_for), 0) > 0 AS held, i.waits_for, i.run_anyway,
                i.ended, {RESOLVED_NO_ID}
            FROM input i JOIN {{schema}}.queue q ON q.name = i.name
            WHERE NOT EXISTS (SELECT FROM missing)
        ),
        first AS (
            INSERT INTO {{schema}}.job (id, {INSERT_COLUMNS_NO_ID}, depends_on, dependents,
                state, output, completed_at)
            SELECT id, {held_values(INSERT_COLUMNS_NO_ID)}, depends_on, dependents,
                CASE WHEN ended IS NULL THEN 'created' ELSE 'cancelled' END::{{schema}}.job_state,
                ended, CASE WHEN ended IS NOT NULL THEN {{now}} END
            FROM resolved ORDER BY ord
            ON CONFLICT DO NOTHING
            RETURNING id, name, start_after
        ),
        waits AS (
            INSERT INTO {{schema}}.job_wait (job_id, parents_left, start_after, run_anyway)
            SELECT r.id, cardinality(r.waits_for), r.start_after, COALESCE(r.run_anyway, false)
            FROM resolved r JOIN first f ON f.id = r.id
            WHERE r.held
        ),
        edges AS (
            INSERT INTO {{schema}}.job_edge (parent_id, job_id)
            SELECT p.id, r.id
            FROM resolved r JOIN first f ON f.id = r.id, unnest(r.waits_for) AS p(id)
            WHERE r.held
        ),
        next_slot AS (
            INSERT INTO {{schema}}.job (id, {INSERT_COLUMNS_NO_ID})
            SELECT id, name, data, priority, retry_limit, retry_delay, retry_backoff,
                retry_delay_max, expire_in, heartbeat_seconds, delete_after, dead_letter,
                policy, GREATEST(start_after, slot), keep_until + (slot - singleton_on),
                singleton_key, slot, group_key, trace
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
            (SELECT {{schema}}.refuse_blocked_parents(array_agg(r.ord ORDER BY r.ord))
             FROM resolved r
             WHERE r.dependents AND NOT EXISTS (SELECT FROM first f WHERE f.id = r.id))
                AS parents_inserted,
            (SELECT count(pg_notify({{jobs_channel}}, w.name))
             FROM (SELECT DISTINCT name FROM inserted WHERE start_after <= {{now}}) AS w)
                AS notified
        FROM input i LEFT JOIN inserted n ON n.id = i.id
        ORDER BY i.ord""")
    # Before jobs with parents are inserted: refuse them if a queue (%(names)s) or a parent
    # (%(parents)s) is missing, else mark the parents as having dependents, which holds
    # them until the caller commits (a parent ending meanwhile waits, and then counts the
    # new jobs among its dependents), and return each parent's state (one missing from
    # states ended since it was looked up) and %(count)s new job ids. Parents are locked in
    # id order, so senders that share some never deadlock.
    job_depend = Template("""
        WITH known AS (
            SELECT id FROM {schema}.job WHERE id = ANY(%(parents)s::bigint[])
            UNION ALL
            SELECT id FROM {schema}.archive WHERE id = ANY(%(parents)s::bigint[])
        ),
        missing AS (
            SELECT unnest(%(names)s::text[]) AS name EXCEPT SELECT name FROM {schema}.queue
        ),
        unknown AS (
            SELECT unnest(%(parents)s::bigint[]) AS id EXCEPT SELECT id FROM known
        ),
        refused AS (SELECT EXISTS (SELECT FROM missing) OR EXISTS (SELECT FROM unknown) AS no),
        marked AS (
            UPDATE {schema}.job SET dependents = true
            WHERE id IN (SELECT id FROM {schema}.job
                         WHERE id = ANY(%(parents)s::bigint[]) AND NOT (SELECT no FROM refused)
                         ORDER BY id FOR UPDATE)
            RETURNING id, state
        )
        SELECT ARRAY(SELECT name FROM missing ORDER BY name) AS missing,
            ARRAY(SELECT id FROM unknown ORDER BY id) AS unknown,
            (SELECT jsonb_object_agg(id, state) FROM (
                SELECT id, state FROM marked
                UNION ALL
                SELECT id, state FROM {schema}.archive WHERE id = ANY(%(parents)s::bigint[])
             ) AS s) AS states,
            ARRAY(SELECT nextval({job_seq}) FROM generate_series(1, %(count)s)
                  WHERE NOT (SELECT no FROM refused)) AS ids""")
    # What get_job_by_id adds to a job: the jobs that depend on it, and how many of its
    # parents it still waits for.
    job_relatives = Template("""
        SELECT ARRAY(SELECT id FROM {schema}.job WHERE depends_on @> ARRAY[%(id)s::bigint]
                     UNION ALL
                     SELECT id FROM {schema}.archive
                     WHERE depends_on @> ARRAY[%(id)s::bigint]
                     ORDER BY id) AS children,
            (SELECT w.parents_left FROM {schema}.job_wait w JOIN {schema}.job j ON j.id = w.job_id
             WHERE w.job_id = %(id)s AND j.state = 'created') AS parents_left""")

    # -- jobs: consuming -------------------------------------------------------------------
    # The ids to claim come as an array from a sub-select (rather than a CTE joined to the
    # table): a plan without a join, about 10% cheaper to make. A queue with limits is
    # claimed from only by the fetcher that holds its turn (%(turn)s). Jobs go by priority,
    # then due time, then id: the order of job_fetch_idx, where within a priority the due
    # jobs come before the deferred ones, whose start_after is checked on index entries
    # (their rows are never read). The claimed rows are named by queue as well as id, so
    # that in the partitioned layout the update reads the queue's partition only.
    job_fetch = Template(f"""
        UPDATE {{schema}}.job j
        {CLAIM_SET}
        WHERE j.name = %(name)s AND j.id = ANY(ARRAY(
            SELECT id FROM {{schema}}.job
            WHERE name = %(name)s AND state < 'active' AND start_after <= {{now}}
                AND NOT EXISTS (SELECT FROM {{schema}}.queue
                                WHERE name = %(name)s AND (paused OR NOT %(turn)s AND {LIMITED}))
            ORDER BY priority DESC, start_after, id
            LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED))
        {CLAIM_RETURNING}""")
    # The jobs due now in the queues named or matching a pattern (POSIX regular
    # expressions), in the order a fetch claims them (priority, due time, age) across those
    # queues, with whether their queue is paused: the order pgqueue.testing's drain runs
    # them in, one at a time.
    job_due_order = Template("""
        SELECT j.id, j.name, q.paused
        FROM {schema}.job j JOIN {schema}.queue q ON q.name = j.name
        WHERE (j.name = ANY(%(names)s::text[]) OR j.name ~ ANY(%(patterns)s::text[]))
            AND j.state < 'active' AND j.start_after <= {now}
        ORDER BY j.priority DESC, j.start_after, j.id
        LIMIT %(limit)s""")
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
    # The turn is taken only in a READ COMMITTED transaction: in another, the snapshot may be
    # older than the turn, and miss the claims of the fetcher that held it before.
    queue_fetch_lock = Template("""
        SELECT current_setting('transaction_isolation') AS isolation,
            CASE WHEN current_setting('transaction_isolation') = 'read committed'
                THEN pg_advisory_xact_lock(hashtext({fetch_lock_prefix} || %(name)s)) IS NULL
            END""")
    queue_fetch_try_lock = Template("""
        SELECT current_setting('transaction_isolation') AS isolation,
            CASE WHEN current_setting('transaction_isolation') = 'read committed'
                THEN pg_try_advisory_xact_lock(hashtext({fetch_lock_prefix} || %(name)s))
            END AS locked""")
    job_fetch_one_per_key = Template(f"""
        WITH win AS MATERIALIZED (
            SELECT id, priority, start_after, state, policy,
                COALESCE(singleton_key, '') AS key
            FROM {{schema}}.job
            WHERE name = %(name)s AND state < 'active'
                AND (start_after <= {{now}} OR (state = 'retry' AND policy = 'stately'))
            ORDER BY priority DESC, start_after, id
            LIMIT %(window)s
        ),
        ranked AS (
            SELECT w.*, row_number() OVER (
                    PARTITION BY w.key
                    ORDER BY (w.state = 'retry' AND w.policy = 'stately') DESC,
                        w.priority DESC, w.start_after, w.id) AS nth
            FROM win w
        ),
        next AS (
            SELECT j.id FROM {{schema}}.job j JOIN ranked r ON r.id = j.id
            WHERE j.name = %(name)s AND r.nth = 1 AND r.start_after <= {{now}}
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
            ORDER BY r.priority DESC, r.start_after, r.id
            LIMIT %(limit)s
            FOR UPDATE OF j SKIP LOCKED
        ),
        claimed AS ({CLAIM})
        SELECT claimed.*, scanned.count AS scanned
        FROM (SELECT count(*) FROM win) AS scanned LEFT JOIN claimed ON true""")
    # A grouped queue's claim (the caller holds its turn). The groups with waiting jobs are
    # found by skipping through job_group_idx from one group to the next; each group gives
    # as many of its next runnable jobs as %(group_limit)s leaves room for beside its active
    # ones (for an ordered queue: its first waiting job, if it is due and none is active, so
    # a job waiting to retry holds back the group's later ones; a job waiting for its
    # parents is not in line until they completed), and as many as its rate
    # limit (if any) leaves beside its starts in the window. Jobs are taken by their place in
    # their group counting its active jobs, so the groups with the fewest running go first:
    # one group's backlog delays no other group's next job by more than a claim. Among equal
    # places (and priorities), groups take turns: those after the queue's group_cursor (the
    # group the last claim ended with) first, so claims go round the groups.
    # A grouped queue's jobs all have a group (those sent without one are in group ''), so
    # every part of this is an index range; the chosen ids drive primary-key probes (named by
    # queue too, one partition when partitioned; the state compared as text, so that no
    # partial index on state matches instead).
    job_fetch_grouped = Template(f"""
        WITH RECURSIVE grp AS (
            (SELECT group_key FROM {{schema}}.job
             WHERE name = %(name)s AND state < 'active' AND group_key IS NOT NULL
             ORDER BY group_key LIMIT 1)
            UNION ALL
            SELECT (SELECT j.group_key FROM {{schema}}.job j
                    WHERE j.name = %(name)s AND j.state < 'active' AND j.group_key IS NOT NULL
                        AND j.group_key > g.group_key
                    ORDER BY j.group_key LIMIT 1)
            FROM grp g WHERE g.group_key IS NOT NULL
        ),
        cand AS (
            SELECT c.id, c.priority, a.n + c.nth AS place, g.group_key,
                (%(cursor)s::text IS NULL OR g.group_key > %(cursor)s) AS next_turn
            FROM grp g
            CROSS JOIN LATERAL (
                SELECT count(*) AS n FROM {{schema}}.job a
                WHERE a.name = %(name)s AND a.group_key = g.group_key
                    AND a.state = 'active') a
            CROSS JOIN LATERAL (
                SELECT count(*) AS n FROM {{schema}}.group_rate r, unnest(r.starts) s
                WHERE %(group_rate_count)s::integer IS NOT NULL
                    AND r.name = %(name)s AND r.group_key = g.group_key
                    AND s > %(at)s::timestamptz
                        - make_interval(secs => %(group_rate_seconds)s::float8)
                    AND s <= %(at)s::timestamptz) r
            CROSS JOIN LATERAL (
                SELECT h.*, row_number() OVER (ORDER BY h.priority DESC, h.id) AS nth
                FROM (SELECT j.id, j.priority, j.start_after FROM {{schema}}.job j
                      WHERE j.name = %(name)s AND j.group_key = g.group_key
                          AND j.state < 'active'
                          AND (%(ordered)s AND j.start_after < {HELD}
                               OR j.start_after <= {{now}})
                      ORDER BY j.priority DESC, j.id
                      LIMIT GREATEST(LEAST(%(group_limit)s::integer - a.n,
                                           %(group_rate_count)s::integer - r.n,
                                           %(limit)s), 0)) h) c
            WHERE c.start_after <= {{now}}
        ),
        picked AS MATERIALIZED (
            SELECT id, group_key,
                row_number() OVER (ORDER BY place, priority DESC, next_turn DESC, group_key, id)
                    AS turn
            FROM cand
            ORDER BY turn LIMIT %(limit)s
        ),
        turned AS (
            UPDATE {{schema}}.queue
            SET group_cursor = (SELECT group_key FROM picked ORDER BY turn DESC LIMIT 1)
            WHERE name = %(name)s AND EXISTS (SELECT FROM picked)
        )
        UPDATE {{schema}}.job j
        {CLAIM_SET}
        WHERE j.name = %(name)s AND j.id = ANY(ARRAY(SELECT id FROM picked))
            AND j.state::text IN ('created', 'retry')
            AND NOT EXISTS (SELECT FROM {{schema}}.queue WHERE name = %(name)s AND paused)
        {CLAIM_RETURNING}""")
    # Waiting jobs of a grouped queue without a group (sent while it was not grouped, or
    # as it became so) join group '', where its claims find them. Driven by the grouped
    # queues, each read through its range of job_fetch_idx: a pass costs nothing where no
    # queue is grouped (a job that was running when its queue became grouped joins if it
    # comes back to retry).
    job_group_the_ungrouped = Template(f"""
        UPDATE {{schema}}.job SET group_key = ''
        WHERE id = ANY(ARRAY(
            SELECT u.id FROM {{schema}}.queue q
            CROSS JOIN LATERAL (
                SELECT j.id FROM {{schema}}.job j
                WHERE j.name = q.name AND j.state < 'active' AND j.group_key IS NULL
                ORDER BY j.priority DESC, j.start_after, j.id
                LIMIT %(limit)s) u
            WHERE {GROUPED} AND (%(name)s::text IS NULL OR q.name = %(name)s)
            LIMIT %(limit)s))
        RETURNING id""")
    queue_policy = Template(
        f"SELECT policy, paused, {LIMITED} AS limited FROM {{schema}}.queue WHERE name = %(name)s"
    )
    # How many jobs a queue with limits lets the fetcher holding its turn claim now (at
    # most %(limit)s), and, when its rate limit is what holds them back, in how many
    # seconds it lets one start (else NULL); and the moment it counted at. Starts stamped
    # after now (the clock was set back) are not counted: by the clock, they have not
    # happened.
    queue_room = Template(f"""
        SELECT {{now}} AS at, GREATEST(LEAST(%(limit)s,
                q.concurrency - (SELECT count(*) FROM {{schema}}.job a
                                 WHERE a.state = 'active' AND a.name = q.name),
                q.rate_count - r.recent), 0)::integer AS room,
            CASE WHEN q.rate_count <= r.recent THEN extract(epoch FROM
                r.oldest + make_interval(secs => q.rate_seconds) - {{now}})::float8 END AS wait,
            CASE WHEN q.ordered THEN 1 ELSE q.group_concurrency END AS group_limit,
            q.ordered, q.rate_count IS NOT NULL AS rated, {GROUPED} AS grouped,
            q.group_rate_count, q.group_rate_seconds, q.group_cursor
        FROM {{schema}}.queue q,
            LATERAL (SELECT count(*) AS recent, min(s) AS oldest FROM unnest(q.rate_starts) s
                     WHERE s > {{now}} - make_interval(secs => q.rate_seconds)
                         AND s <= {{now}}) AS r
        WHERE q.name = %(name)s""")
    # A rate-limited queue's starts: those still in the window, and %(count)s more now.
    queue_rate_take = Template(f"""
        UPDATE {{schema}}.queue
        SET rate_starts = {kept_starts("rate_starts", "rate_count", "rate_seconds")}
            || array_fill({{now}}, ARRAY[%(count)s::integer])
        WHERE name = %(name)s AND rate_count IS NOT NULL""")
    # A group rate limit's starts (%(count)s per %(seconds)s), kept as a queue's are: each
    # group's, and as many more now as %(taken)s, a JSON object {{group: count}}, says.
    group_rate_take = Template(f"""
        INSERT INTO {{schema}}.group_rate AS r (name, group_key, starts)
        SELECT %(name)s, t.key, array_fill({{now}}, ARRAY[t.value::integer])
        FROM jsonb_each_text(%(taken)s::jsonb) AS t
        ON CONFLICT (name, group_key) DO UPDATE
        SET starts = {kept_starts("r.starts", "%(count)s::integer", "%(seconds)s::float8")}
            || excluded.starts""")
    # In how many seconds (0 or less: already) a group with waiting jobs whose rate limit
    # was used up at %(at)s, the moment its claim counted the windows at, may start one;
    # NULL: no such group.
    group_rate_wait = Template("""
        SELECT extract(epoch FROM min(w.at) - {now})::float8 AS wait
        FROM {schema}.queue q
        JOIN {schema}.group_rate r ON r.name = q.name
        CROSS JOIN LATERAL (
            SELECT s + make_interval(secs => q.group_rate_seconds) AS at
            FROM unnest(r.starts) s
            WHERE s > %(at)s::timestamptz - make_interval(secs => q.group_rate_seconds)
                AND s <= %(at)s::timestamptz
            ORDER BY s DESC OFFSET q.group_rate_count - 1 LIMIT 1) w
        WHERE q.name = %(name)s
            AND EXISTS (SELECT FROM {schema}.job j
                        WHERE j.name = r.name AND j.group_key = r.group_key
                            AND j.state < 'active')""")
    # Outcomes, heartbeats and releases name the run they belong to: the job's id and its
    # run_id. A run that no longer holds the job (its run_id is not the job's, or the job is
    # no longer active) changes nothing, and its id is not returned. A NULL run (a manual
    # consumer that gave only ids) means whichever run holds the job.
    #
    # Each takes the runs as %(batch)s, one JSON array of [id, run, ...] (complete: output;
    # fail: output, terminal, final state; release: delay; then, optional, an object with
    # the run's last progress and its logs; touch: optional progress): one parameter
    # however large the batch (arrays of text cost the client far more), and a set the
    # planner counts as a hundred rows, so it probes the job table's primary key once per
    # run rather than reading a table-sized side (see in_state).
    job_complete_many = Template(f"""
        UPDATE {{schema}}.job j
        SET state = 'completed', completed_at = {{now}}, output = o.v -> 2,
            progress = CASE WHEN o.v -> 3 ? 'progress' THEN o.v -> 3 -> 'progress'
                ELSE j.progress END,
            logs = {logged("(o.v -> 3)")}
        FROM jsonb_array_elements(%(batch)s::jsonb) AS o(v)
        WHERE j.id = (o.v ->> 0)::bigint AND {in_state("j", "active")}
            AND j.run_id = COALESCE((o.v ->> 1)::bigint, j.run_id)
        RETURNING j.id""")
    # A failure moves the job to retry (after its delay) while retries remain and the
    # failure is not terminal, else to its final state (failed, or expired when it ran out
    # of time), where a dead_letter queue gets a copy of it. A stately job whose key
    # already has a job waiting to retry goes to its final state (the policy allows one).
    # A retry's retention starts again from its new start.
    job_fail_many = Template(f"""
        WITH input AS (
            SELECT f.*, {RETRY_DELAY} AS delay,
                j.retry_count < j.retry_limit AND NOT f.terminal
                    AND NOT (j.policy = 'stately' AND {clashes("retry", ("stately",))})
                    AS again
            FROM (SELECT (v ->> 0)::bigint AS id, (v ->> 1)::bigint AS run, v -> 2 AS output,
                         (v ->> 3)::boolean AS terminal, v ->> 4 AS final_state,
                         v -> 5 AS extra
                  FROM jsonb_array_elements(%(batch)s::jsonb) AS v) AS f
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
                output = f.output,
                errors = jsonb_path_query_array(COALESCE(j.errors, '[]'),
                                                '$[last - {MAX_ERRORS - 2} to last]')
                    || jsonb_build_array(jsonb_build_object(
                        'attempt', j.attempt, 'worker', j.worker_id,
                        'started_at', j.started_at, 'ended_at', {{now}}, 'error', f.output)),
                logs = {logged("f.extra")}
            FROM input f
            WHERE j.id = f.id AND {in_state("j", "active")}
                AND (f.run IS NULL OR j.run_id = f.run)
            RETURNING j.*
        ),
        dead AS (
            INSERT INTO {{schema}}.job (name, data, priority, keep_until, policy, output,
                group_key)
            SELECT f.dead_letter, f.data, f.priority, {{now}} + interval '14 days',
                COALESCE(q.policy, 'standard'),
                jsonb_build_object('source_queue', f.name, 'source_id', f.id,
                                   'error', f.output), f.group_key
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
    job_touch_many = Template(f"""
        UPDATE {{schema}}.job j
        SET heartbeat_at = {{now}},
            progress = CASE WHEN jsonb_array_length(t.v) > 2 THEN t.v -> 2 ELSE j.progress END
        FROM jsonb_array_elements(%(batch)s::jsonb) AS t(v)
        WHERE j.id = (t.v ->> 0)::bigint AND {in_state("j", "active")}
            AND j.run_id = COALESCE((t.v ->> 1)::bigint, j.run_id)
        RETURNING j.id""")
    # A stopping worker hands back the jobs it did not finish, to run again at once
    # elsewhere, and a snoozed job goes back to start after its delay (each run's third
    # element, in seconds); this is not a failure, so retry_count stays. A stately job whose key
    # already has a job waiting to retry cannot go back (the policy allows one): it fails,
    # saying why, rather than stay active for nobody.
    job_release_many = Template(f"""
        WITH input AS (
            SELECT r.*, EXISTS (
                    SELECT FROM {{schema}}.job j
                    WHERE j.id = r.id AND j.policy = 'stately'
                        AND {clashes("retry", ("stately",))}) AS blocked
            FROM (SELECT (v ->> 0)::bigint AS id, (v ->> 1)::bigint AS run,
                         make_interval(secs => COALESCE((v ->> 2)::float8, 0)) AS delay,
                         v -> 3 AS extra
                  FROM jsonb_array_elements(%(batch)s::jsonb) AS v) AS r
        ),
        released AS (
            UPDATE {{schema}}.job j
            SET state = CASE WHEN r.blocked THEN 'failed' ELSE 'retry' END::{{schema}}.job_state,
                start_after = CASE WHEN r.blocked THEN j.start_after ELSE {{now}} + r.delay END,
                keep_until = CASE WHEN r.blocked THEN j.keep_until
                    ELSE {{now}} + r.delay + (j.keep_until - j.start_after) END,
                started_at = CASE WHEN r.blocked THEN j.started_at END,
                completed_at = CASE WHEN r.blocked THEN {{now}} END,
                output = CASE WHEN r.blocked THEN jsonb_build_object('type', 'released',
                    'message', 'its worker stopped before it finished, and it could not '
                    || 'go back to retry: another job of its singleton key waits to retry '
                    || '(stately policy); retry() it to run it again') ELSE j.output END,
                worker_id = NULL,
                logs = {logged("r.extra")}
            FROM input r
            WHERE j.id = r.id AND {in_state("j", "active")}
                AND j.run_id = COALESCE(r.run, j.run_id)
            RETURNING j.id, j.name, j.state, j.start_after
        )
        SELECT id, state::text, (SELECT count(pg_notify({{jobs_channel}}, n.name))
                    FROM (SELECT DISTINCT name FROM released
                          WHERE state = 'retry' AND start_after <= {{now}}) AS n)
                AS notified
        FROM released""")
    # What runs cut short (cancelled, or stopped with their worker) logged, stored with
    # their attempts whatever their jobs' state now; a job claimed again since (another
    # run) is left alone.
    job_log_many = Template(f"""
        UPDATE {{schema}}.job j
        SET logs = {logged("(o.v -> 2)")}
        FROM jsonb_array_elements(%(batch)s::jsonb) AS o(v)
        WHERE j.id = (o.v ->> 0)::bigint AND j.run_id = COALESCE((o.v ->> 1)::bigint, j.run_id)
        RETURNING j.id""")
    # The runs the database counts as a worker's: it compares them with the runs it has.
    job_held_by = Template("""
        SELECT id, run_id FROM {schema}.job
        WHERE state = 'active' AND worker_id = %(worker_id)s""")
    # Cancellation requests for the jobs a worker holds that another session cancelled
    # while its notification was missed: the cancelled runs.
    job_cancelled_among = Template(f"""
        SELECT j.id, j.run_id FROM {{schema}}.job j
        WHERE j.id = ANY(%(ids)s::bigint[]) AND {in_state("j", "cancelled")}""")
    listen_jobs = Template("LISTEN {jobs_channel_ident}")
    listen_cancel = Template("LISTEN {cancel_channel_ident}")
    listen_done = Template("LISTEN {done_channel_ident}")
    # A listener's check that notifications reach it (a pooler in transaction mode accepts
    # LISTEN but never passes a notification on): sent from another connection.
    listen_probe = Template("SELECT pg_notify(%(channel)s, %(payload)s)")
    # -- jobs: management ------------------------------------------------------------------
    job_get_many = Template(f"""
        SELECT {JOB_COLUMNS}, false AS archived, logs FROM {{schema}}.job
        WHERE id = ANY(%(ids)s::bigint[])
        UNION ALL
        SELECT {JOB_COLUMNS}, true AS archived, logs FROM {{schema}}.archive
        WHERE id = ANY(%(ids)s::bigint[])""")
    # upsert: the waiting job of a queue's singleton key takes new data (and priority, if
    # given); the oldest one if the policy lets several wait.
    job_upsert_data = Template("""
        UPDATE {schema}.job j
        SET data = %(data)s::jsonb, priority = COALESCE(%(priority)s::integer, j.priority)
        WHERE j.id = (SELECT id FROM {schema}.job
                      WHERE name = %(name)s AND singleton_key = %(key)s
                          AND state < 'active'
                      ORDER BY id LIMIT 1 FOR UPDATE)
            AND j.state < 'active'
        RETURNING j.id""")
    # A job not yet started, changed: its data, priority and start (the time it may be kept
    # moves with its start); NULL leaves one as it is. Its queue is told when it is due.
    # A job waiting for its parents keeps its new start in job_wait until they complete.
    job_update = Template(f"""
        WITH asked AS (
            SELECT COALESCE(%(start_after)s::timestamptz,
                            {{now}} + make_interval(secs => %(start_in)s::float8)) AS start
        ),
        held AS (
            UPDATE {{schema}}.job_wait w
            SET start_after = COALESCE((SELECT start FROM asked), w.start_after)
            WHERE w.job_id = %(id)s AND w.parents_left > 0
            RETURNING w.job_id
        ),
        changed AS (
            UPDATE {{schema}}.job j
            SET data = COALESCE(%(data)s::jsonb, j.data),
                priority = COALESCE(%(priority)s::integer, j.priority),
                start_after = n.start_after,
                keep_until = j.keep_until + (n.start_after - j.start_after)
            FROM (SELECT id, CASE WHEN EXISTS (SELECT FROM held) THEN start_after
                              ELSE COALESCE((SELECT start FROM asked), start_after)
                              END AS start_after
                  FROM {{schema}}.job WHERE id = %(id)s) AS n
            WHERE j.id = n.id AND j.state < 'active'
            RETURNING j.*
        )
        SELECT {JOB_COLUMNS}, false AS archived,
            CASE WHEN start_after <= {{now}} THEN pg_notify({{jobs_channel}}, name) END
        FROM changed""")
    # The jobs among %(ids)s that have not ended, each marked awaited so that its end (or
    # its deletion) will be announced on the done channel: announced. A row another
    # transaction holds is not waited for (the waiter looks again soon): a job ending
    # meanwhile is seen ended by the next look.
    job_await = Template("""
        WITH marked AS (
            UPDATE {schema}.job j SET awaited = true
            FROM (SELECT id FROM {schema}.job
                  WHERE id = ANY(%(ids)s::bigint[]) AND state < 'completed' AND NOT awaited
                  FOR UPDATE SKIP LOCKED) AS s
            WHERE j.id = s.id
            RETURNING j.id)
        SELECT j.id, j.awaited OR m.id IS NOT NULL AS announced
        FROM {schema}.job j LEFT JOIN marked m ON m.id = j.id
        WHERE j.id = ANY(%(ids)s::bigint[]) AND j.state < 'completed'""")
    # The jobs among %(ids)s that have not ended (the others ended, or are gone).
    job_unended = Template("""
        SELECT id FROM {schema}.job WHERE id = ANY(%(ids)s::bigint[]) AND state < 'completed'""")
    job_cancel_many = Template("""
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
    # A resumed job runs now. One that depends on others is resumed once none of them is
    # still to run (a job cancelled while it waited for them is left as it is until then).
    job_resume_many = Template(f"""
        WITH resumed AS (
            UPDATE {{schema}}.job j
            SET state = 'created', completed_at = NULL, started_at = NULL,
                keep_until = {{now}} + (keep_until - start_after), start_after = {{now}}
            WHERE id = ANY(%(ids)s::bigint[]) AND state = 'cancelled'
                AND NOT {clashes("created", ("short", "stately"))}
                AND NOT EXISTS (SELECT FROM {{schema}}.job x
                                WHERE x.id = ANY(j.depends_on) AND x.state < 'completed')
            RETURNING id
        ),
        released AS (DELETE FROM {{schema}}.job_wait w USING resumed r WHERE w.job_id = r.id)
        SELECT id FROM resumed""")
    # A failed or expired job runs again, with one more retry allowed if it had used them
    # (its dependents heard of its end already: see migrations/0012).
    job_retry_many = Template(f"""
        UPDATE {{schema}}.job j
        SET state = 'retry', completed_at = NULL, start_after = {{now}},
            retry_limit = GREATEST(retry_limit, retry_count + 1),
            keep_until = {{now}} + (keep_until - start_after)
        WHERE id = ANY(%(ids)s::bigint[]) AND state IN ('failed', 'expired')
            AND NOT {clashes("retry", ("stately",))}
        RETURNING id""")
    job_delete_many = Template("""
        WITH j AS (DELETE FROM {schema}.job WHERE id = ANY(%(ids)s::bigint[]) RETURNING id),
             a AS (DELETE FROM {schema}.archive WHERE id = ANY(%(ids)s::bigint[]) RETURNING id)
        SELECT id FROM j UNION SELECT id FROM a""")
