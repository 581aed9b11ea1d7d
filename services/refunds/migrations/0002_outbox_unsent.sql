-- The relay's index of unsent events holds only them (a partial index). It used to hold every event ever
-- written, sent_time first: it grew with the table, and marking an event sent added an entry to it. Now marking
-- adds none, and the index is as small as the backlog.
DROP INDEX outbox_unsent;
CREATE INDEX outbox_unsent ON outbox (create_time, id) WHERE sent_time IS NULL;
