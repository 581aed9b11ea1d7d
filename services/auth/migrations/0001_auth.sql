-- The auth service's schema. Portable across SQLite and PostgreSQL: TEXT, BIGINT, no BLOB.
-- Ids are UUIDv7 strings; times are BIGINT microseconds since the Unix epoch.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,   -- normalised: trimmed, lower-cased
    password_hash TEXT NOT NULL,          -- Argon2id PHC string
    display_name  TEXT NOT NULL,
    roles         TEXT NOT NULL,          -- space-separated, e.g. 'customer admin'
    create_time   BIGINT NOT NULL
);

-- Refresh tokens are stored hashed (SHA-256 hex). A family is every token descended from one login;
-- presenting a spent token again revokes its whole family.
CREATE TABLE refresh_tokens (
    id          TEXT PRIMARY KEY,
    family_id   TEXT NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash  TEXT NOT NULL UNIQUE,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT,
    revoked_at  BIGINT,
    create_time BIGINT NOT NULL
);

CREATE INDEX refresh_tokens_family_id ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_id ON refresh_tokens (user_id);

-- Ed25519 keys that sign access tokens. The private key is PKCS#8 DER in standard base64; the public key
-- is the raw 32 bytes in base64url without padding (a JWK's `x`).
CREATE TABLE signing_keys (
    kid               TEXT PRIMARY KEY,
    private_key_pkcs8 TEXT NOT NULL,
    public_key        TEXT NOT NULL,
    create_time       BIGINT NOT NULL
);
