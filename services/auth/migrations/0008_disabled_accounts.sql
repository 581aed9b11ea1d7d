-- Staff can disable an account (a fraudster, a departed employee): it cannot sign in, and its sessions ended when
-- it was disabled. NULL while the account is enabled.
ALTER TABLE users ADD COLUMN disable_time BIGINT;
