-- Claims filter by channel too (one actor per customer and channel): put channel in the claim
-- index, so a big backlog on one channel costs another channel's claims nothing.
DROP INDEX notifications_ready;
CREATE INDEX notifications_ready ON notifications (customer_id, channel, lane, due_at) WHERE state IN (1, 4);
