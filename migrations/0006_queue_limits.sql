-- pgqueue schema, version 6: limits a queue keeps across every worker, enforced when jobs
-- are claimed (on the database's clock).

-- At most `concurrency` jobs of the queue active at once; at most `rate_count` started
-- in any `rate_seconds`. rate_starts holds the starts of the last rate_seconds (at most
-- rate_count of them): the limit is a sliding window, not a bucket that bursts to twice.
ALTER TABLE {schema}.queue
    ADD COLUMN concurrency integer CHECK (concurrency > 0),
    ADD COLUMN rate_count integer CHECK (rate_count > 0),
    ADD COLUMN rate_seconds double precision CHECK (rate_seconds > 0),
    ADD COLUMN rate_starts timestamptz[] NOT NULL DEFAULT ARRAY[]::timestamptz[],
    ADD CONSTRAINT queue_rate_limit_check CHECK ((rate_count IS NULL) = (rate_seconds IS NULL));
