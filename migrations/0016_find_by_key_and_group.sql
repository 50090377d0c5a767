-- pgqueue schema, version 16: finding jobs by singleton key or by group, in any state, reads
-- an index range instead of a queue's rows (the dashboard's job search). Only jobs that have
-- a key (or a group) get an entry, so jobs without them pay nothing.
CREATE INDEX job_singleton_key_id_idx ON {schema}.job (singleton_key, id)
    WHERE singleton_key IS NOT NULL;
CREATE INDEX job_group_key_id_idx ON {schema}.job (group_key, id) WHERE group_key IS NOT NULL;
