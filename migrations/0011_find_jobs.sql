-- pgqueue schema, version 11: finding a queue's jobs page by page (find_jobs), in id order,
-- in the job table and in the archive.

CREATE INDEX job_name_id_idx ON {schema}.job (name, id);
CREATE INDEX archive_name_id_idx ON {schema}.archive (name, id);
DROP INDEX {schema}.archive_name_idx;
