-- Provider settings of the push, email and SMS channels (model::ChannelSettings as JSON):
-- NULL or '{}' means webhook only. One column, so a new provider field needs no migration.
ALTER TABLE customers ADD COLUMN channels TEXT;
