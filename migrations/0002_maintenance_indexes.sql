-- pgqueue schema, version 2: maintenance finds what is due with index range scans, so a pass
-- that has nothing to do stays cheap however many finished or archived jobs are not due yet.

-- Finished jobs by state, oldest first: completed ones and failed, cancelled or expired ones
-- are archived after different delays, each a range of this index.
CREATE INDEX job_finished_state_idx ON {schema}.job (state, completed_at)
    WHERE state > 'active';
DROP INDEX {schema}.job_finished_idx;

-- When an archived job is deleted (archived_at + delete_after), written by the archive step.
ALTER TABLE {schema}.archive ADD COLUMN delete_at timestamptz;
UPDATE {schema}.archive SET delete_at = archived_at + make_interval(secs => delete_after);
ALTER TABLE {schema}.archive ALTER COLUMN delete_at SET NOT NULL;
CREATE INDEX archive_delete_at_idx ON {schema}.archive (delete_at);
DROP INDEX {schema}.archive_archived_at_idx;
