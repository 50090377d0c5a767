-- pgqueue schema, version 15: what a handler logged, and the trace a job was sent in.

-- logs: the lines each attempt logged (job.log() and, when captured, logging records
-- emitted inside the handler), one object per attempt (its attempt, lines and how many were dropped); the last
-- attempts only, each bounded (see Job.logs). NULL until a run logs something.
ALTER TABLE {schema}.job ADD COLUMN logs jsonb;
ALTER TABLE {schema}.archive ADD COLUMN logs jsonb;
-- trace: the sender's trace context (W3C traceparent/tracestate), so a run joins the
-- trace that sent it. NULL unless tracing is on where the job was sent.
ALTER TABLE {schema}.job ADD COLUMN trace jsonb;
ALTER TABLE {schema}.archive ADD COLUMN trace jsonb;
