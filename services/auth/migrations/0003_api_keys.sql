-- API keys: stored as the SHA-256 hex of the whole secret (high-entropy, so a fast hash is right), with the
-- scopes they grant. The prefix helps people recognise a key without exposing it.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,
    scopes       TEXT NOT NULL,          -- space-separated
    create_time  BIGINT NOT NULL,
    expire_time  BIGINT NOT NULL,
    revoke_time  BIGINT
);

CREATE INDEX api_keys_user_id ON api_keys (user_id);
