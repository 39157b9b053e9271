-- Generic jobs had no worker; their REST surface, aggregate and read model are gone. Their
-- events stay in the log (and in event_log); readers skip them as unknown types.
DROP TABLE IF EXISTS jobs;
DROP TABLE IF EXISTS jobs__rebuild;
DELETE FROM projection_checkpoints WHERE name IN ('jobs', 'jobs__rebuild');
