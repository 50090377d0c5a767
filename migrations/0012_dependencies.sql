-- pgqueue schema, version 12: jobs that depend on other jobs (workflows).

-- A job's parents: the jobs it waits for (NULL: none). The list moves to the archive and is
-- deleted with the job, so a job's edges live and go with it. "dependents" marks a job
-- some other job depends on: only such jobs pay for the trigger below.
ALTER TABLE {schema}.job ADD COLUMN depends_on bigint[];
ALTER TABLE {schema}.job ADD COLUMN dependents boolean NOT NULL DEFAULT false;
ALTER TABLE {schema}.archive ADD COLUMN depends_on bigint[];
ALTER TABLE {schema}.archive ADD COLUMN dependents boolean NOT NULL DEFAULT false;
-- A job's children, found by the parent's id (get_job_by_id). Without a pending list
-- (fastupdate), which every lookup would read whole until a vacuum empties it.
CREATE INDEX job_depends_on_idx ON {schema}.job USING gin (depends_on)
    WITH (fastupdate = off) WHERE depends_on IS NOT NULL;
CREATE INDEX archive_depends_on_idx ON {schema}.archive USING gin (depends_on)
    WITH (fastupdate = off) WHERE depends_on IS NOT NULL;

-- A job whose parents have not all completed waits here: how many have not, the start it
-- was sent with, and whether it runs once they have all ended, however they ended. (Rows
-- of jobs released, cancelled or deleted are left to maintenance, off the parents' path.)
-- Meanwhile its row in job waits in state created with start_after at the year 9000 (and
-- keep_until its retention later), so that no claim takes it and no retention expires it.
CREATE TABLE {schema}.job_wait (
    job_id bigint PRIMARY KEY,
    parents_left integer NOT NULL,
    start_after timestamptz NOT NULL,
    run_anyway boolean NOT NULL DEFAULT false
);
-- The parents a waiting job has yet to hear from: one row per parent not ended when the job
-- was sent, deleted when that parent ends, so each parent counts once for each child
-- however often it ends (resumed or retried, and ending again).
CREATE TABLE {schema}.job_edge (
    parent_id bigint NOT NULL,
    job_id bigint NOT NULL,
    PRIMARY KEY (parent_id, job_id)
);

-- Refuses a flow one of whose parents a singleton key or a queue policy blocked: its
-- dependents would wait for a job that does not exist. The statement fails, writing nothing.
CREATE FUNCTION {schema}.refuse_blocked_parents(ords integer[]) RETURNS boolean
    LANGUAGE plpgsql AS $$
BEGIN
    IF ords IS NOT NULL THEN
        RAISE EXCEPTION 'blocked parents: %', array_to_string(ords, ',')
            USING ERRCODE = 'PGQ01';
    END IF;
    RETURN true;
END $$;

-- A parent ended (or was deleted before it ended): its edges go, and the children they
-- lead to hear of it. Those that may now run count one parent fewer (all of them when it
-- completed, those that run anyway otherwise) and start when none is left. When it did
-- not complete, the waiting jobs that depend on it, directly or through others, and would
-- not run anyway are cancelled at once with the reason (one statement, however deep the
-- graph: the triggers this fires find those jobs' children cancelled and stop there).
-- The releases of a schema take turns (a transaction-level advisory lock): two transactions
-- that each end parents of the same children would otherwise lock those children in
-- opposite orders, and deadlock. Each statement is planned once for any parent (plpgsql
-- keeps generic plans), so each reaches its rows by primary key, one way only.
CREATE FUNCTION {schema}.parent_ended() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    parent {schema}.job;
    ended text;
    children bigint[];
    notified bigint;
BEGIN
    IF TG_OP = 'DELETE' THEN
        parent := OLD;
        ended := 'deleted';
    ELSE
        parent := NEW;
        ended := NEW.state::text;
    END IF;
    WITH heard AS (DELETE FROM {schema}.job_edge e WHERE e.parent_id = parent.id
                   RETURNING e.job_id)
    SELECT ARRAY(SELECT job_id FROM heard) INTO children;
    IF cardinality(children) = 0 THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('pgqueue.dependents.' || TG_TABLE_SCHEMA));
    IF ended <> 'completed' THEN
        WITH RECURSIVE doomed(id) AS (
            SELECT k.id FROM unnest(children) AS k(id)
            WHERE (SELECT NOT w.run_anyway AND w.parents_left > 0 AND j.state::text = 'created'
                   FROM {schema}.job_wait w JOIN {schema}.job j ON j.id = w.job_id
                   WHERE w.job_id = k.id)
            UNION
            SELECT k.id FROM doomed d
            CROSS JOIN LATERAL unnest(ARRAY(
                SELECT e.job_id FROM {schema}.job_edge e WHERE e.parent_id = d.id)) AS k(id)
            WHERE (SELECT NOT w.run_anyway AND w.parents_left > 0 AND j.state::text = 'created'
                   FROM {schema}.job_wait w JOIN {schema}.job j ON j.id = w.job_id
                   WHERE w.job_id = k.id)
        )
        UPDATE {schema}.job j SET state = 'cancelled', completed_at = {schema}.clock(),
            output = jsonb_build_object(
                'type', 'ParentFailed',
                'message', format('job %s, which it depends on, %s', parent.id,
                                  CASE WHEN ended IN ('failed', 'expired') THEN ended
                                      ELSE 'was ' || ended END),
                'parent', parent.id, 'parent_state', ended)
        WHERE j.id = ANY(ARRAY(SELECT id FROM doomed)) AND j.state::text = 'created';
    END IF;
    WITH counted AS (
        UPDATE {schema}.job_wait w SET parents_left = w.parents_left - 1
        WHERE w.job_id = ANY(children) AND w.parents_left > 0
            AND (ended = 'completed' OR w.run_anyway)
        RETURNING w.job_id, w.parents_left, w.start_after
    ),
    ready AS (
        UPDATE {schema}.job j
        SET start_after = GREATEST(c.start_after, {schema}.clock()),
            keep_until = GREATEST(c.start_after, {schema}.clock()) + (j.keep_until - j.start_after)
        FROM counted c
        WHERE j.id = c.job_id AND c.parents_left = 0 AND j.state::text = 'created'
        RETURNING j.name, j.start_after
    )
    SELECT count(pg_notify(TG_TABLE_SCHEMA || '_jobs', r.name)) INTO notified
    FROM (SELECT DISTINCT name FROM ready WHERE start_after <= {schema}.clock()) AS r;
    RETURN NULL;
END $$;

CREATE TRIGGER job_parent_ended AFTER UPDATE OF state ON {schema}.job
    FOR EACH ROW WHEN (NEW.dependents AND NEW.state >= 'completed' AND OLD.state < 'completed')
    EXECUTE FUNCTION {schema}.parent_ended();
CREATE TRIGGER job_parent_deleted AFTER DELETE ON {schema}.job
    FOR EACH ROW WHEN (OLD.dependents AND OLD.state < 'completed')
    EXECUTE FUNCTION {schema}.parent_ended();
