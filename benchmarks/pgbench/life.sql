-- (c) the whole life, batched: insert 100 jobs, claim 100, complete them (three
-- transactions). Counts 100 jobs per transaction.
INSERT INTO job (queue, data)
SELECT 'bench', jsonb_build_object('n', g) FROM generate_series(1, 100) AS g;
WITH claimed AS (
    UPDATE job SET state = 1, started_at = now()
    WHERE id IN (
        SELECT id FROM job WHERE queue = 'bench' AND state = 0
        ORDER BY priority DESC, id LIMIT 100 FOR UPDATE SKIP LOCKED
    )
    RETURNING id
)
SELECT coalesce(array_agg(id), '{}') AS ids FROM claimed
\gset
UPDATE job SET state = 2, completed_at = now() WHERE id = ANY(:ids::bigint[]);
