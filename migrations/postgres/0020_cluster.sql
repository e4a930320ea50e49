-- Cluster ownership (PostgreSQL only: a SQLite file has one node, which owns everything).
-- Each customer system hashes into one of a fixed number of buckets; each bucket has at most one
-- owner node at a time, and only the owner runs that bucket's customer actors.

-- Live nodes: each rewrites heartbeat_at (database clock, epoch milliseconds) every heartbeat.
CREATE TABLE cluster_nodes (
    node_id      TEXT PRIMARY KEY,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);

-- One row per bucket. epoch rises on every change of owner: the fencing token. A row with no
-- owner, or whose expires_at (database clock) has passed, may be taken by the node that the
-- rendezvous hash of the live nodes names.
CREATE TABLE bucket_leases (
    bucket     BIGINT PRIMARY KEY,
    owner      TEXT,
    epoch      BIGINT NOT NULL DEFAULT 0,
    expires_at BIGINT NOT NULL DEFAULT 0,
    -- How many times the bucket changed owner with a planned handover, and by expiry.
    handovers  BIGINT NOT NULL DEFAULT 0,
    takeovers  BIGINT NOT NULL DEFAULT 0
);

-- Each controller's learned state (limit, RTT baseline, break point, circuit, Retry-After pause)
-- as JSON, saved periodically and when its actor stops, so a new owner, a restarted node or an
-- actor that stopped when idle resumes where the last one left off instead of slow start.
CREATE TABLE controller_checkpoints (
    customer_id TEXT NOT NULL,
    channel     BIGINT NOT NULL,
    state       TEXT NOT NULL,
    saved_at    BIGINT NOT NULL,
    PRIMARY KEY (customer_id, channel)
);
