-- Email verification: a token mailed to the account's address proves the mailbox is its owner's. The account
-- keeps when that happened; tokens are stored hashed (SHA-256 hex), valid for a day, kept a week past expiry
-- so that a late click is told it expired. A token of an account verified already just confirms it again.
ALTER TABLE users ADD COLUMN email_verify_time BIGINT;

CREATE TABLE email_verifications (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash  TEXT NOT NULL UNIQUE,
    expires_at  BIGINT NOT NULL,
    create_time BIGINT NOT NULL
);

CREATE INDEX email_verifications_user_id ON email_verifications (user_id, create_time);
CREATE INDEX email_verifications_expires_at ON email_verifications (expires_at);
