-- pgqueue schema, version 19: the handlers workers serve, by queue and application, so that
-- a worker starting on a schema another application uses learns that both register a handler
-- for the same queue (and would take each other's jobs).

-- One row per queue name (or glob pattern) and application: the handler last registered for
-- it (module:qualname), the options that shape its jobs and their fingerprint, the worker
-- that registered it last, and when (by the schema's clock). Workers write their rows at
-- start and again every few minutes while they run; rows no worker refreshed for an hour
-- count no more, and maintenance deletes them.
CREATE TABLE {schema}.handler (
    name text NOT NULL,
    app text NOT NULL,
    handler text NOT NULL,
    options jsonb NOT NULL,
    fingerprint text NOT NULL,
    -- The POSIX regular expression a pattern handler's queues match (NULL for a queue name).
    regex text,
    explicit_app boolean NOT NULL,
    worker text NOT NULL,
    registered_at timestamptz NOT NULL,
    seen_at timestamptz NOT NULL,
    PRIMARY KEY (name, app)
);
CREATE INDEX handler_seen_idx ON {schema}.handler (seen_at);
