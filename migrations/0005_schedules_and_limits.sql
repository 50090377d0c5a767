-- pgqueue schema, version 5: a schedule belongs to its queue, so deleting a queue deletes
-- its schedules (a schedule left without its queue made every cron tick fail).
DELETE FROM {schema}.schedule s
WHERE NOT EXISTS (SELECT FROM {schema}.queue q WHERE q.name = s.name);
ALTER TABLE {schema}.schedule ADD CONSTRAINT schedule_queue_fkey
    FOREIGN KEY (name) REFERENCES {schema}.queue (name) ON DELETE CASCADE;
