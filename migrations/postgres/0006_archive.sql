-- Retention. Finished notifications older than the inbox retention move here in small batches.
-- The archive is partitioned by month of created_at (epoch ms); the retention job creates each
-- month's partition before moving rows into it and drops whole partitions once they are older
-- than the archive retention, so purging never deletes row by row nor locks the live table.
-- The partial index finds finished rows by age; rows enter it when they finish, not at intake.
CREATE INDEX notifications_finished ON notifications (created_at) WHERE state IN (3, 5, 6, 7, 8);

CREATE TABLE archived_notifications (
    id               BIGINT NOT NULL,
    customer_id      TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    recipient        TEXT NOT NULL,
    lane             BIGINT NOT NULL,
    payload          BYTEA NOT NULL,
    state            BIGINT NOT NULL,
    attempts         BIGINT NOT NULL,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    send_at          BIGINT,
    expires_at       BIGINT,
    due_at           BIGINT NOT NULL,
    delivered_at     BIGINT,
    channel          BIGINT NOT NULL,
    template_id      TEXT,
    template_version BIGINT,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE INDEX archived_notifications_inbox ON archived_notifications (customer_id, recipient, id);
