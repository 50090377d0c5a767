-- pgqueue schema, version 4: every run of a job is fenced, and every time decision reads
-- one clock, the database's.

-- The schema's clock: the database's time when the statement began (not the transaction:
-- a claim in a long transaction is stamped when it happens). Every statement reads it, so
-- hosts need not agree on the time, and a test can move time for every instance at once
-- by giving it a constant offset (set_clock_offset). Its body stays a single expression
-- so that the planner inlines it: reading it costs what now() costs, and the fetch
-- index's range on start_after still works.
CREATE FUNCTION {schema}.clock() RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT pg_catalog.statement_timestamp() $$;

-- Moves the schema's clock to now() + seconds (0 puts it back). Replacing the function
-- invalidates every plan that inlined it, prepared ones included.
CREATE FUNCTION {schema}.set_clock_offset(seconds float8) RETURNS void
    LANGUAGE plpgsql
    AS $fn$
BEGIN
    IF seconds IS NULL OR seconds = 'NaN' OR abs(seconds) > 3153600000 THEN
        RAISE EXCEPTION 'clock offset must be a finite number of seconds within 100 years'
            USING ERRCODE = '22023';
    END IF;
    EXECUTE format(
        'CREATE OR REPLACE FUNCTION {schema}.clock() RETURNS timestamptz '
        'LANGUAGE sql STABLE PARALLEL SAFE AS %L',
        CASE WHEN seconds = 0 THEN 'SELECT pg_catalog.statement_timestamp()'
            ELSE format('SELECT pg_catalog.statement_timestamp() + make_interval(secs => %s)',
                        seconds) END);
END
$fn$;

-- Runs. A claim counts an attempt and draws the run a random token, run_id: an outcome,
-- heartbeat or release names the run it belongs to, so a run that lost the job (it
-- expired, was cancelled and resumed, or was handed back) changes nothing. A token, not
-- the count: a count is reused when a claim rolls back, and is the same in other schemas.
-- Jobs claimed before this version count from 0 and have no token until claimed again.
ALTER TABLE {schema}.job ADD COLUMN attempt integer NOT NULL DEFAULT 0;
ALTER TABLE {schema}.job ADD COLUMN run_id bigint;
ALTER TABLE {schema}.archive ADD COLUMN attempt integer NOT NULL DEFAULT 0;
ALTER TABLE {schema}.archive ADD COLUMN run_id bigint;

ALTER TABLE {schema}.job ALTER COLUMN created_at SET DEFAULT {schema}.clock();
ALTER TABLE {schema}.job ALTER COLUMN start_after SET DEFAULT {schema}.clock();
