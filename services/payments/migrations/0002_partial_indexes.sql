-- The relay's index of unsent events holds only them (a partial index). It used to hold every event ever
-- written, sent_time first: it grew with the table, and marking an event sent added an entry to it. Now marking
-- adds none, and the index is as small as the backlog.
DROP INDEX outbox_unsent;
CREATE INDEX outbox_unsent ON outbox (create_time, id) WHERE sent_time IS NULL;

-- The same for captures and refunds not yet in the ledger: the poster's indexes hold only those.
DROP INDEX payments_ledger_unposted;
CREATE INDEX payments_ledger_unposted ON payments (create_time, id) WHERE ledger_posted = FALSE;
DROP INDEX refunds_applied_ledger_unposted;
CREATE INDEX refunds_applied_ledger_unposted ON refunds_applied (create_time, refund_id) WHERE ledger_posted = FALSE;
