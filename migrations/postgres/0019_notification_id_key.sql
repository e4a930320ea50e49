-- The key of the permutation that turns row ids into the notification ids callers see
-- (src/public_id.rs): one row, written by the first node to start, read by every node.
CREATE TABLE notification_id_key (
    slot BIGINT PRIMARY KEY CHECK (slot = 1),
    secret TEXT NOT NULL
);
