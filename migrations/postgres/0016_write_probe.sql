-- One row per running node, rewritten by /readyz: proof that the database still takes writes
-- (a full disk or a read-only failover answers reads but not this).
CREATE TABLE write_probe (
    node BIGINT PRIMARY KEY,
    probed_at BIGINT NOT NULL
);
