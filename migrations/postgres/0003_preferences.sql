-- Channels and opt-out preferences. channel holds the proto Channel number (1 webhook, 2 FCM,
-- 3 APNs, 4 email, 5 SMS); existing notifications were all webhooks.
ALTER TABLE notifications ADD COLUMN channel BIGINT NOT NULL DEFAULT 1;

-- One recipient's choice per customer, channel and lane (lane 0: every lane).
CREATE TABLE preferences (
    customer_id TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    channel     BIGINT NOT NULL,
    lane        BIGINT NOT NULL,
    opted_out   BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (customer_id, recipient, channel, lane)
);

-- Bumped by every change to a recipient's preferences: caches keep only the newest version, so
-- a slow reader can never put an older set back over a newer one.
CREATE TABLE preference_versions (
    customer_id TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    version     BIGINT NOT NULL,
    PRIMARY KEY (customer_id, recipient)
);
