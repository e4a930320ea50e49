-- Scoped submit tokens: named bearer tokens that see only some customer systems. Only the
-- SHA-256 of a token is stored (token_hash, base64url); the token itself is shown once, at
-- creation. customer_ids is a JSON array of customer ids. Revoking deletes the row.
-- last_used_at (epoch milliseconds) is written at most about once a minute per node.
CREATE TABLE scoped_tokens (
    name         TEXT NOT NULL PRIMARY KEY,
    token_hash   TEXT NOT NULL UNIQUE,
    customer_ids TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT
);
