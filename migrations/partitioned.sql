-- The partitioned layout: applied with version 1, in its transaction, when a schema is
-- created with partition=True (never to a schema that exists). The job table becomes a
-- table partitioned by queue name, each queue's jobs in a partition of their own (made when
-- the queue is, see migration 17) and any other in job_default, so that a queue's dead
-- tuples, bloat and vacuums stay its own. The later migrations apply to both layouts:
-- columns, indexes and triggers added to the parent reach every partition.

-- LIKE keeps the columns, their defaults and the identity; the new identity's sequence
-- takes the old one's name once the old table is gone (statements name job_id_seq).
ALTER TABLE {schema}.job RENAME TO job_unpartitioned;
ALTER TABLE {schema}.job_unpartitioned RENAME CONSTRAINT job_pkey TO job_unpartitioned_pkey;
CREATE TABLE {schema}.job (
    LIKE {schema}.job_unpartitioned INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING CONSTRAINTS,
    -- A unique index of a partitioned table includes the partition key. id comes first, so
    -- that a lookup by id alone probes this index in each partition; ids stay unique
    -- because the sequence draws them.
    PRIMARY KEY (id, name)
) PARTITION BY LIST (name);
DROP TABLE {schema}.job_unpartitioned;
ALTER SEQUENCE {schema}.job_id_seq1 RENAME TO job_id_seq;

-- Jobs of a queue without a partition of its own. Partitions take the storage parameters
-- the job table had (a partitioned table has none of its own).
CREATE TABLE {schema}.job_default PARTITION OF {schema}.job DEFAULT WITH (fillfactor = 80);

-- The indexes of version 1, as it made them.
CREATE INDEX job_fetch_idx ON {schema}.job (name, priority DESC, id)
    INCLUDE (start_after)
    WHERE state < 'active';
CREATE INDEX job_active_idx ON {schema}.job (started_at) WHERE state = 'active';
CREATE INDEX job_finished_idx ON {schema}.job (completed_at) WHERE state > 'active';
CREATE INDEX job_keep_until_idx ON {schema}.job (keep_until) WHERE state < 'active';
CREATE UNIQUE INDEX job_singleton_key_idx ON {schema}.job (name, singleton_key)
    WHERE state <= 'active' AND singleton_key IS NOT NULL AND singleton_on IS NULL
        AND policy = 'standard';
CREATE UNIQUE INDEX job_singleton_slot_idx ON {schema}.job
    (name, singleton_on, COALESCE(singleton_key, ''))
    WHERE state <> 'cancelled' AND singleton_on IS NOT NULL;
CREATE UNIQUE INDEX job_policy_short_idx ON {schema}.job (name, COALESCE(singleton_key, ''))
    WHERE state = 'created' AND policy = 'short';
CREATE UNIQUE INDEX job_policy_singleton_idx ON {schema}.job (name, COALESCE(singleton_key, ''))
    WHERE state = 'active' AND policy = 'singleton';
CREATE UNIQUE INDEX job_policy_stately_idx ON {schema}.job
    (name, state, COALESCE(singleton_key, ''))
    WHERE state <= 'active' AND policy = 'stately';
