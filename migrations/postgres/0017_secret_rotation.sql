-- Signing-secret rotation: the replaced secret stays valid (webhooks carry both signatures)
-- until previous_secret_until (epoch milliseconds). Both NULL when no rotation is under way.
ALTER TABLE customers ADD COLUMN previous_signing_secret TEXT;
ALTER TABLE customers ADD COLUMN previous_secret_until BIGINT;
