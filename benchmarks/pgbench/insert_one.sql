-- (a) one job, one INSERT, one transaction: the ceiling for W1.
\set n random(1, 1000000)
INSERT INTO job (queue, data) VALUES ('bench', jsonb_build_object('n', :n::integer)) RETURNING id;
