-- (b) claim 100 waiting jobs with FOR UPDATE SKIP LOCKED, then complete them, each in its
-- own transaction as a worker does: the ceiling for W3. Counts 100 jobs per transaction.
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
