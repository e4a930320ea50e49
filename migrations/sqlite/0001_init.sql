-- floodgate schema, SQLite dialect. Ids and timestamps (epoch milliseconds) are 64-bit integers;
-- state and lane hold the proto enum numbers. Keep in step with migrations/postgres.

CREATE TABLE customers (
    id               TEXT PRIMARY KEY,
    webhook_url      TEXT NOT NULL,
    signing_secret   TEXT NOT NULL,
    max_rate_per_sec INTEGER NOT NULL DEFAULT 0,
    paused           INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);

-- INTEGER PRIMARY KEY is SQLite's rowid: ids are assigned in insert order at no extra index cost.
CREATE TABLE notifications (
    id              INTEGER PRIMARY KEY,
    customer_id     TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    lane            INTEGER NOT NULL,
    payload         BLOB NOT NULL,
    state           INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- Fencing token: bumped by every claim; a completion only applies while it still matches.
    claim           INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    -- When the next attempt may start (send_at, then retry backoff).
    due_at          INTEGER NOT NULL,
    send_at         INTEGER,
    expires_at      INTEGER,
    lease_until     INTEGER,
    delivered_at    INTEGER,
    -- The source of truth for idempotency, race-free under concurrent duplicates.
    UNIQUE (customer_id, idempotency_key)
);

-- Claims: one customer's ready work, per lane, oldest due first. Only pending (1) and retrying (4)
-- rows are indexed, so finished history costs the claim path nothing.
CREATE INDEX notifications_ready ON notifications (customer_id, lane, due_at) WHERE state IN (1, 4);

-- Lease recovery: claims (2 = in flight) whose lease ran out.
CREATE INDEX notifications_leases ON notifications (lease_until) WHERE state = 2;

-- The inbox: one recipient's notifications, newest first.
CREATE INDEX notifications_inbox ON notifications (customer_id, recipient, id);
