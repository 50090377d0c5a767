-- pgqueue schema, version 11: finding a queue's jobs page by page (find_jobs), in id order,
-- in the job table and in the archive.

-- The predicate, true of every row, keeps these indexes to statements that name a queue:
-- one that looks jobs up by id alone cannot prove it, so it never skip-scans them (as
-- PostgreSQL 18 would) instead of probing the primary key.
CREATE INDEX job_name_id_idx ON {schema}.job (name, id) WHERE name IS NOT NULL;
CREATE INDEX archive_name_id_idx ON {schema}.archive (name, id) WHERE name IS NOT NULL;
DROP INDEX {schema}.archive_name_idx;
