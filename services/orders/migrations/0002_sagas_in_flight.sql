-- The sagas with work left (any step but 'done'), one row each, for the recovery task's scan.
--
-- They used to be found through an index on orders (status, saga_step, step_time). Every saga move changes
-- those columns, so on PostgreSQL no move could be a heap-only (HOT) update: each one wrote a new entry into
-- all five of the table's indexes. With no index naming the columns a move changes, a move rewrites the row
-- alone; a saga's row here is written when it starts (an order placed, a cancellation begun) and deleted
-- when it lands on 'done'.
CREATE TABLE sagas_in_flight (
    order_id TEXT PRIMARY KEY REFERENCES orders (id)
);

INSERT INTO sagas_in_flight (order_id) SELECT id FROM orders WHERE saga_step <> 'done';

DROP INDEX orders_in_flight;
