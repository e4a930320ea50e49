-- Retention. Finished notifications older than the inbox retention move here in small batches;
-- rows older than the archive retention are deleted in small batches. The partial index finds
-- finished rows by age without costing intake anything (rows enter it when they finish).
CREATE INDEX notifications_finished ON notifications (created_at) WHERE state IN (3, 5, 6, 7, 8);

CREATE TABLE archived_notifications (
    id               INTEGER PRIMARY KEY,
    customer_id      TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    recipient        TEXT NOT NULL,
    lane             INTEGER NOT NULL,
    payload          BLOB NOT NULL,
    state            INTEGER NOT NULL,
    attempts         INTEGER NOT NULL,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    send_at          INTEGER,
    expires_at       INTEGER,
    due_at           INTEGER NOT NULL,
    delivered_at     INTEGER,
    channel          INTEGER NOT NULL,
    template_id      TEXT,
    template_version INTEGER
);

CREATE INDEX archived_notifications_inbox ON archived_notifications (customer_id, recipient, id);
CREATE INDEX archived_notifications_age ON archived_notifications (created_at);
