-- The language messages to a user are written in (BCP 47), chosen at registration.
ALTER TABLE users ADD COLUMN locale TEXT NOT NULL DEFAULT 'en';
