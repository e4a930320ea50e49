-- Cluster ownership tables exist on PostgreSQL only: a SQLite file has one node, which owns
-- every customer. What both need is the controllers' learned state.

-- Each controller's learned state (limit, RTT baseline, break point, circuit, Retry-After pause)
-- as JSON, saved periodically and when its actor stops, so a restarted node or an actor that
-- stopped when idle resumes where the last one left off instead of slow start.
CREATE TABLE controller_checkpoints (
    customer_id TEXT NOT NULL,
    channel     INTEGER NOT NULL,
    state       TEXT NOT NULL,
    saved_at    INTEGER NOT NULL,
    PRIMARY KEY (customer_id, channel)
);
