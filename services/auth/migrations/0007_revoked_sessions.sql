-- Sessions (refresh-token families) that ended before their access tokens expired: signed out, signed out
-- everywhere by a password change or reset, the account deleted, a refresh token presented twice. Verifiers poll
-- this list (ListRevokedSessions) and refuse the access tokens whose `sid` is in it. Rows are kept a day, longer
-- than any access token lives; a deleted account's sessions stay listed although its refresh tokens are gone.
CREATE TABLE revoked_sessions (
    session_id  TEXT PRIMARY KEY,
    revoke_time BIGINT NOT NULL
);

CREATE INDEX revoked_sessions_revoke_time ON revoked_sessions (revoke_time, session_id);
