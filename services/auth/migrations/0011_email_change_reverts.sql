-- Undoing an email change ("this wasn't me"): when an account moves to another address, the address it had is
-- mailed a token that takes it back (and sets a new password). Tokens are stored hashed (SHA-256 hex) with the
-- address they restore, valid for a week, kept a week past expiry so that a late click is told it expired, and
-- deleted when used. Later changes add tokens of their own; none replaces an earlier one.
CREATE TABLE email_change_reverts (
    id             TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    previous_email TEXT NOT NULL,
    token_hash     TEXT NOT NULL UNIQUE,
    expires_at     BIGINT NOT NULL,
    create_time    BIGINT NOT NULL
);

CREATE INDEX email_change_reverts_user_id ON email_change_reverts (user_id);
CREATE INDEX email_change_reverts_expires_at ON email_change_reverts (expires_at);
