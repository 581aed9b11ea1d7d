-- The ledger: accounts, journal transactions and their postings (double-entry, append-only).
-- Portable SQL: runs unchanged on SQLite and PostgreSQL. Times are BIGINT microseconds since the epoch,
-- amounts BIGINT minor units; account ids are UUIDv7, transaction ids the caller's.
--
-- Sign convention: amount_minor > 0 is a debit, < 0 a credit; balance_minor is the raw signed sum of an
-- account's postings, updated in the same database transaction as they are inserted.

CREATE TABLE accounts (
    id            TEXT   PRIMARY KEY,
    code          TEXT   NOT NULL UNIQUE,
    name          TEXT   NOT NULL,
    type          TEXT   NOT NULL CHECK (type IN ('ASSET', 'LIABILITY', 'REVENUE', 'EXPENSE', 'EQUITY')),
    currency      TEXT   NOT NULL,
    balance_minor BIGINT NOT NULL,
    -- How many postings the account has; the last one's account_seq.
    entry_count   BIGINT NOT NULL CHECK (entry_count >= 0),
    create_time   BIGINT NOT NULL
);

-- A transaction is written once, with its postings, and never changed. A reversal names the transaction it
-- negates; UNIQUE lets each transaction be reversed at most once (NULLs do not collide on either engine).
CREATE TABLE transactions (
    id                      TEXT   PRIMARY KEY,
    description             TEXT   NOT NULL,
    reverses_transaction_id TEXT   UNIQUE,
    actor                   TEXT   NOT NULL,
    create_time             BIGINT NOT NULL
);

CREATE TABLE transaction_metadata (
    transaction_id TEXT NOT NULL REFERENCES transactions (id),
    meta_key       TEXT NOT NULL,
    meta_value     TEXT NOT NULL,
    PRIMARY KEY (transaction_id, meta_key)
);

-- One row per posting. account_seq numbers an account's postings 1, 2, ... in the order they changed its
-- balance, and balance_after_minor is the balance right after; both come from the balance UPDATE itself.
CREATE TABLE postings (
    transaction_id      TEXT    NOT NULL REFERENCES transactions (id),
    line                INTEGER NOT NULL,
    account_id          TEXT    NOT NULL REFERENCES accounts (id),
    currency            TEXT    NOT NULL,
    amount_minor        BIGINT  NOT NULL CHECK (amount_minor <> 0),
    account_seq         BIGINT  NOT NULL,
    balance_after_minor BIGINT  NOT NULL,
    create_time         BIGINT  NOT NULL,
    PRIMARY KEY (transaction_id, line),
    UNIQUE (account_id, account_seq)
);
