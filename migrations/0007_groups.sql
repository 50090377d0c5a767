-- pgqueue schema, version 7: groups of jobs within a queue (a tenant, a customer, an
-- account), with a limit of active jobs per group, fair claims across groups, and strict
-- order within a group.

ALTER TABLE {schema}.job ADD COLUMN group_key text;
ALTER TABLE {schema}.archive ADD COLUMN group_key text;
-- group_concurrency: at most this many jobs of one group active at once, across workers.
-- ordered: a group's jobs run one at a time, in order; a job waiting to retry holds back
-- the group's later jobs.
ALTER TABLE {schema}.queue
    ADD COLUMN group_concurrency integer CHECK (group_concurrency > 0),
    ADD COLUMN ordered boolean NOT NULL DEFAULT false;
-- A grouped queue's claims: the groups with waiting jobs (skipping from one to the next),
-- each group's next jobs, and each group's active jobs. Jobs without a group enter neither.
CREATE INDEX job_group_idx ON {schema}.job (name, group_key, priority DESC, id)
    INCLUDE (start_after)
    WHERE state < 'active' AND group_key IS NOT NULL;
CREATE INDEX job_group_active_idx ON {schema}.job (name, group_key)
    WHERE state = 'active' AND group_key IS NOT NULL;
-- One job per singleton key at a time (singleton, stately) is a grouping of its own: a
-- queue has one or the other.
ALTER TABLE {schema}.queue ADD CONSTRAINT queue_groups_policy_check
    CHECK (policy IN ('standard', 'short') OR (group_concurrency IS NULL AND NOT ordered));
