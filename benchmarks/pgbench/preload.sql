-- Waiting jobs for reference (b); psql -v jobs=N.
INSERT INTO job (queue, data)
SELECT 'bench', jsonb_build_object('n', g) FROM generate_series(1, :jobs) AS g;
VACUUM ANALYZE job;
