-- pgqueue schema, version 3: the periodic maintenance pass runs once per interval across
-- every instance, not once per instance: the instance that moves this timestamp forward
-- (on the newest version row, in the pass's transaction) runs it.
ALTER TABLE {schema}.version ADD COLUMN maintained_on timestamptz;
