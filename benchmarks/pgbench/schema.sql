-- The minimal job table the pgbench references run against: what any Postgres queue needs
-- (an id, a queue, a priority, a state, a payload, timestamps) and one partial index for the claim.
DROP TABLE IF EXISTS job;
CREATE TABLE job (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue text NOT NULL,
    priority integer NOT NULL DEFAULT 0,
    state smallint NOT NULL DEFAULT 0,  -- 0 waiting, 1 active, 2 completed
    data jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    completed_at timestamptz
) WITH (fillfactor = 80);
CREATE INDEX job_claim_idx ON job (queue, priority DESC, id) WHERE state = 0;
