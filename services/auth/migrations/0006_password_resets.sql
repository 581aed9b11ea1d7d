-- Password resets: a token mailed to the account's address sets a new password once, within an hour. Stored
-- hashed (SHA-256 hex) like refresh tokens; kept a week past expiry so a late click is told it expired.
CREATE TABLE password_resets (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash  TEXT NOT NULL UNIQUE,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT,
    create_time BIGINT NOT NULL
);

CREATE INDEX password_resets_user_id ON password_resets (user_id, create_time);
CREATE INDEX password_resets_expires_at ON password_resets (expires_at);
