-- pgqueue schema, version 8: a rate limit for each group of a queue (a tenant's or an
-- account's own quota), kept like the queue's own: a sliding window on the database's clock;
-- and turns between groups.

ALTER TABLE {schema}.queue
    ADD COLUMN group_rate_count integer CHECK (group_rate_count > 0),
    ADD COLUMN group_rate_seconds double precision CHECK (group_rate_seconds > 0),
    -- The group a claim of the queue ended with: the next claim starts after it (among
    -- groups with as many running jobs), so that claims go round the groups.
    ADD COLUMN group_cursor text,
    ADD CONSTRAINT queue_group_rate_limit_check
        CHECK ((group_rate_count IS NULL) = (group_rate_seconds IS NULL)),
    DROP CONSTRAINT queue_groups_policy_check,
    ADD CONSTRAINT queue_groups_policy_check
        CHECK (policy IN ('standard', 'short')
               OR (group_concurrency IS NULL AND NOT ordered AND group_rate_count IS NULL));
-- The starts of a group in the last group_rate_seconds (at most group_rate_count of them).
-- Written by claims (which hold the queue's turn); maintenance drops a group's row once its
-- window holds no start.
CREATE TABLE {schema}.group_rate (
    name text NOT NULL REFERENCES {schema}.queue (name) ON DELETE CASCADE,
    group_key text NOT NULL,
    starts timestamptz[] NOT NULL,
    PRIMARY KEY (name, group_key)
);
