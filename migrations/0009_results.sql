-- pgqueue schema, version 9: the end of a job someone waits for is announced.

-- Set by a waiter (pgqueue's result()) before it waits: the job's end, or its deletion
-- before it ended, is then announced on the channel "<schema>_done" (payload: its id).
-- Jobs nobody waits for cost the trigger's WHEN test and nothing more.
ALTER TABLE {schema}.job ADD COLUMN awaited boolean NOT NULL DEFAULT false;

CREATE FUNCTION {schema}.announce_end() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify(TG_TABLE_SCHEMA || '_done', OLD.id::text);
    ELSE
        PERFORM pg_notify(TG_TABLE_SCHEMA || '_done', NEW.id::text);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER job_end_announced AFTER UPDATE OF state ON {schema}.job
    FOR EACH ROW WHEN (NEW.awaited AND NEW.state >= 'completed' AND OLD.state < 'completed')
    EXECUTE FUNCTION {schema}.announce_end();
CREATE TRIGGER job_deletion_announced AFTER DELETE ON {schema}.job
    FOR EACH ROW WHEN (OLD.awaited AND OLD.state < 'completed')
    EXECUTE FUNCTION {schema}.announce_end();
