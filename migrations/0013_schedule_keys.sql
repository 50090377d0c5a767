-- pgqueue schema, version 13: a queue may have several schedules, told apart by a key.

-- '' is the schedule of a queue sent without a key (the only one a queue had before).
ALTER TABLE {schema}.schedule ADD COLUMN key text NOT NULL DEFAULT '';
ALTER TABLE {schema}.schedule DROP CONSTRAINT schedule_pkey;
ALTER TABLE {schema}.schedule ADD PRIMARY KEY (name, key);
