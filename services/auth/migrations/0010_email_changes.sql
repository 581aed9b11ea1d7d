-- Changing an account's address: the owner names the new address (and proves the password), a token mailed
-- there proves the new mailbox, and only then does the account move. Tokens are stored hashed (SHA-256 hex) with
-- the address they were mailed to, valid for a day, kept a week past expiry so that a late click is told it
-- expired. A newer request replaces the account's earlier ones.
CREATE TABLE email_changes (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    new_email   TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    expires_at  BIGINT NOT NULL,
    create_time BIGINT NOT NULL
);

CREATE INDEX email_changes_user_id ON email_changes (user_id, create_time);
CREATE INDEX email_changes_expires_at ON email_changes (expires_at);
