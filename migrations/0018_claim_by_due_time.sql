-- pgqueue schema, version 17: a queue's claims take its due jobs by priority, then by the
-- time they became due, then by id. The fetch index holds start_after as a key column after
-- the priority, so within a priority the due jobs come before the deferred ones (start_after
-- in the future, or a retry backing off), and a claim checks start_after on index entries
-- without reading the deferred jobs' rows: it reaches its limit before them. (A grouped
-- queue keeps job_group_idx: an ordered group's jobs run in id order, a retry first.)
DROP INDEX {schema}.job_fetch_idx;
CREATE INDEX job_fetch_idx ON {schema}.job (name, priority DESC, start_after, id)
    WHERE state < 'active';
