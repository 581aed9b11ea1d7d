-- Profiles and address books.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL. Times are BIGINT microseconds since the epoch,
-- ids are TEXT (auth's user ids; UUIDv7 for addresses, so ordering by id is ordering by creation).

-- One per account. Made from user.registered, or by the customer's first change if that comes first. Every
-- change to a customer's profile or address book writes this row first: on PostgreSQL that locks the
-- customer's data, on SQLite it takes the write lock, so one customer's changes are serialised.
CREATE TABLE profiles (
    user_id      TEXT   PRIMARY KEY,
    email        TEXT   NOT NULL,
    display_name TEXT   NOT NULL,
    phone        TEXT   NOT NULL,
    locale       TEXT   NOT NULL,
    create_time  BIGINT NOT NULL,
    update_time  BIGINT NOT NULL
);

CREATE TABLE addresses (
    id          TEXT    PRIMARY KEY,
    user_id     TEXT    NOT NULL,
    label       TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    line1       TEXT    NOT NULL,
    line2       TEXT    NOT NULL,
    city        TEXT    NOT NULL,
    region      TEXT    NOT NULL,
    postal_code TEXT    NOT NULL,
    country     TEXT    NOT NULL,
    is_default  BOOLEAN NOT NULL,
    create_time BIGINT  NOT NULL,
    update_time BIGINT  NOT NULL
);
CREATE INDEX addresses_by_user ON addresses (user_id, id);
-- At most one default per customer, whatever the code does.
CREATE UNIQUE INDEX addresses_one_default ON addresses (user_id) WHERE is_default;

-- The inbox: ids of events this service has handled, written in the transaction of their effect.
CREATE TABLE inbox (
    consumer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    handle_time BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
