-- Listing refunds (ListRefunds), newest first, all or those in one state. All of them page backwards through
-- the primary key (ids are UUIDv7, so by id is by time).
CREATE INDEX refunds_by_status ON refunds (status, id);
