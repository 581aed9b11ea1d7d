-- Every order deliveries has heard of, and whether it was cancelled. A confirmation (order.confirmed) and a
-- cancellation (CancelOrderShipment, order.cancelled) both write the order's row here first, so on PostgreSQL
-- the second waits for the first and then sees what it did (on SQLite the write lock does the same). A
-- cancellation that comes before the confirmation, whose event is still on its way, leaves `cancelled` set,
-- and the confirmation then makes no shipment; one that comes after finds the shipment and cancels it.
CREATE TABLE orders_known (
    order_id    TEXT    PRIMARY KEY,
    cancelled   BOOLEAN NOT NULL,
    update_time BIGINT  NOT NULL
);
