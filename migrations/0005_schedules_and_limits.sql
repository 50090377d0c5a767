-- pgqueue schema, version 5: schedules belong to their queues, and every run can promise a
-- heartbeat.

-- Deleting a queue deletes its schedules (a schedule left without its queue made every
-- cron tick fail).
DELETE FROM {schema}.schedule s
WHERE NOT EXISTS (SELECT FROM {schema}.queue q WHERE q.name = s.name);
ALTER TABLE {schema}.schedule ADD CONSTRAINT schedule_queue_fkey
    FOREIGN KEY (name) REFERENCES {schema}.queue (name) ON DELETE CASCADE;

-- The heartbeat a run promised when it was claimed: the job's heartbeat_seconds, else the
-- claimer's default (workers beat by default; a manual fetch promises none). A run whose
-- last beat is older than this is dead: maintenance sends its job back.
ALTER TABLE {schema}.job ADD COLUMN run_heartbeat double precision;
ALTER TABLE {schema}.archive ADD COLUMN run_heartbeat double precision;
UPDATE {schema}.job SET run_heartbeat = heartbeat_seconds WHERE state = 'active';
