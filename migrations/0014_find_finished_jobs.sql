-- pgqueue schema, version 14: find_jobs' index on a queue's jobs covers its finished jobs
-- only. Indexing every job cost an index entry at each claim and completion (a drain ran
-- about a tenth slower); waiting and active jobs are found through the fetch index and
-- job_active_idx instead (see FIND_KINDS in the statements).
DROP INDEX {schema}.job_name_id_idx;
CREATE INDEX job_name_id_idx ON {schema}.job (name, id) WHERE state > 'active';
