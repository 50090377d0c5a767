-- pgqueue schema, version 17: in the partitioned layout (see partitioned.sql) each queue has
-- a partition of the job table, made with the queue and dropped with it. In the default
-- layout these functions do nothing.

-- The partition of a queue's jobs: job_ and 16 hex digits of the md5 of the queue's name,
-- so that any name makes a valid identifier that no other table of the schema has.
CREATE FUNCTION {schema}.job_partition_name(queue_name text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT 'job_' || left(md5(queue_name), 16) $$;

-- True when the job table is partitioned.
CREATE FUNCTION {schema}.job_partitioned() RETURNS boolean
    LANGUAGE sql STABLE
    AS $$ SELECT relkind = 'p' FROM pg_catalog.pg_class WHERE oid = '{schema}.job'::regclass $$;

-- Names the indexes of a partition after the job table's (job_policy_singleton_idx becomes
-- job_policy_singleton_idx_<the partition's suffix>), rather than after their columns as
-- PostgreSQL does: an error names the index it comes from, and pgqueue tells a policy's
-- refusal by its name. Run as its caller (the owner, in the function below or a migration).
CREATE FUNCTION {schema}.job_partition_index_names(part text) RETURNS void
    LANGUAGE plpgsql AS $fn$
DECLARE
    child text;
    parent text;
BEGIN
    FOR child, parent IN
        SELECT ci.relname, pi.relname
        FROM pg_catalog.pg_index x
        JOIN pg_catalog.pg_class ci ON ci.oid = x.indexrelid
        JOIN pg_catalog.pg_inherits h ON h.inhrelid = x.indexrelid
        JOIN pg_catalog.pg_class pi ON pi.oid = h.inhparent
        WHERE x.indrelid = to_regclass(format('{schema}.%I', part))
    LOOP
        IF child <> parent || '_' || substr(part, 5) THEN
            EXECUTE format('ALTER INDEX {schema}.%I RENAME TO %I',
                           child, parent || '_' || substr(part, 5));
        END IF;
    END LOOP;
END
$fn$;

-- Makes the queue's partition (true), unless the job table is not partitioned or the
-- partition exists (false). Jobs of the queue in job_default (sent while it had no
-- partition) move into it: job_default is swapped for a new one and its rows are inserted
-- again through the job table, which fires no trigger (deleting them from job_default
-- would announce their deletion to waiters and to their dependents).
-- Both run as their owner, who migrated the schema: a role granted the use of pgqueue (see
-- docs/operations.md) creates and deletes queues, but may not create tables in the schema.
CREATE FUNCTION {schema}.job_partition_create(queue_name text) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    part text := {schema}.job_partition_name(queue_name);
BEGIN
    IF NOT {schema}.job_partitioned()
        OR to_regclass(format('{schema}.%I', part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    IF EXISTS (SELECT FROM {schema}.job_default WHERE name = queue_name) THEN
        ALTER TABLE {schema}.job DETACH PARTITION {schema}.job_default;
        ALTER TABLE {schema}.job_default RENAME TO job_default_moving;
        CREATE TABLE {schema}.job_default PARTITION OF {schema}.job DEFAULT
            WITH (fillfactor = 80);
        EXECUTE format('CREATE TABLE {schema}.%I PARTITION OF {schema}.job FOR VALUES IN (%L) '
                       'WITH (fillfactor = 80)', part, queue_name);
        INSERT INTO {schema}.job SELECT * FROM {schema}.job_default_moving;
        DROP TABLE {schema}.job_default_moving;
        PERFORM {schema}.job_partition_index_names('job_default');
    ELSE
        EXECUTE format('CREATE TABLE {schema}.%I PARTITION OF {schema}.job FOR VALUES IN (%L) '
                       'WITH (fillfactor = 80)', part, queue_name);
    END IF;
    PERFORM {schema}.job_partition_index_names(part);
    EXECUTE format('COMMENT ON TABLE {schema}.%I IS %L', part, 'jobs of queue ' || queue_name);
    RETURN true;
END
$fn$;

-- Drops the queue's partition (true) if it has one and its queue no longer exists; run
-- after the queue and its jobs are deleted (a statement cannot drop a table it used).
-- A table of that name bound to another queue (two names whose hashes share their first
-- 16 digits) is that queue's, and stays.
CREATE FUNCTION {schema}.job_partition_drop(queue_name text) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    part text := {schema}.job_partition_name(queue_name);
BEGIN
    IF NOT {schema}.job_partitioned()
        OR to_regclass(format('{schema}.%I', part)) IS NULL
        OR pg_get_expr(
               (SELECT relpartbound FROM pg_class
                 WHERE oid = to_regclass(format('{schema}.%I', part))),
               to_regclass(format('{schema}.%I', part)))
           IS DISTINCT FROM format('FOR VALUES IN (%L)', queue_name)
        OR EXISTS (SELECT FROM {schema}.queue WHERE name = queue_name) THEN
        RETURN false;
    END IF;
    EXECUTE format('DROP TABLE {schema}.%I', part);
    RETURN true;
END
$fn$;

-- Only roles granted them (pgqueue's grant) may call them.
REVOKE ALL ON FUNCTION {schema}.job_partition_create(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION {schema}.job_partition_drop(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION {schema}.job_partition_index_names(text) FROM PUBLIC;

CREATE FUNCTION {schema}.queue_created() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM {schema}.job_partition_create(NEW.name);
    RETURN NULL;
END $$;

CREATE TRIGGER queue_partition_created AFTER INSERT ON {schema}.queue
    FOR EACH ROW EXECUTE FUNCTION {schema}.queue_created();

-- In a partitioned schema: the default partition's indexes named as those made from now on,
-- and the queues that exist get their partitions.
SELECT {schema}.job_partition_index_names('job_default') WHERE {schema}.job_partitioned();
SELECT {schema}.job_partition_create(name) FROM {schema}.queue;
