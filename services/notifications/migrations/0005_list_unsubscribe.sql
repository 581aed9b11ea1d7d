-- A bulk mail's List-Unsubscribe header (RFC 2369): the URL a mail client's own "unsubscribe" goes to, and
-- whether a one-click POST there unsubscribes (RFC 8058's List-Unsubscribe-Post: 1, else 0). Empty and 0 for
-- every mail but newsletters, and for the rows written before.
ALTER TABLE notifications ADD COLUMN list_unsubscribe TEXT NOT NULL DEFAULT '';
ALTER TABLE notifications ADD COLUMN list_unsubscribe_one_click INTEGER NOT NULL DEFAULT 0;
