-- pgqueue schema, version 10: the errors of a job's failed attempts, not only the last.

-- Each failed attempt (a handler's error, an expiry) appends an object with its attempt,
-- worker, started_at, ended_at and error; the last 20 are kept. NULL until one fails.
ALTER TABLE {schema}.job ADD COLUMN errors jsonb;
ALTER TABLE {schema}.archive ADD COLUMN errors jsonb;
