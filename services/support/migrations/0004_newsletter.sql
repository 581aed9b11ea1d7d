-- The newsletter: subscribers (double opt-in) and the newsletters sent.

-- One row per mailbox (email lower-cased). status is PENDING, CONFIRMED or UNSUBSCRIBED. token confirms or
-- ends the subscription; it is mailed to the address and shown nowhere else. request_time is when the last
-- confirmation mail was asked for (tokens last a week from it; a waiting address is mailed at most every 10
-- minutes).
CREATE TABLE newsletter_subscribers (
    email        TEXT   PRIMARY KEY,
    status       TEXT   NOT NULL,
    token        TEXT   NOT NULL UNIQUE,
    locale       TEXT   NOT NULL,
    request_time BIGINT NOT NULL,
    update_time  BIGINT NOT NULL
);
-- The confirmed subscribers, whom a newsletter goes to.
CREATE INDEX newsletter_subscribers_by_status ON newsletter_subscribers (status, email);

-- Each newsletter sent; request_id (NULL when the client gave none) makes a retried request send nothing.
CREATE TABLE newsletters (
    id              TEXT    PRIMARY KEY,
    request_id      TEXT    UNIQUE,
    subject         TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    recipient_count INTEGER NOT NULL,
    sent_by         TEXT    NOT NULL,
    create_time     BIGINT  NOT NULL
);
