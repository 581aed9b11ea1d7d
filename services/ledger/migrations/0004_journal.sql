-- The journal (ListTransactions) reads transactions newest first; their ids are the callers' own, so time
-- orders them, and the id breaks ties.
CREATE INDEX transactions_newest ON transactions (create_time, id);
