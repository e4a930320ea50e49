-- Versioned templates. template_heads holds each template's latest version: saving bumps it
-- with an upsert, whose row lock makes concurrent saves on several nodes take turns.
CREATE TABLE template_heads (
    customer_id TEXT NOT NULL,
    template_id TEXT NOT NULL,
    version     BIGINT NOT NULL,
    PRIMARY KEY (customer_id, template_id)
);

-- Every saved version; never updated. contents is a JSON array of {channel, subject, body}.
CREATE TABLE templates (
    customer_id TEXT NOT NULL,
    template_id TEXT NOT NULL,
    version     BIGINT NOT NULL,
    contents    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (customer_id, template_id, version)
);

-- A notification submitted with a template is pinned to one version; its payload column then
-- holds the variables (JSON) it is rendered with at send time.
ALTER TABLE notifications ADD COLUMN template_id TEXT;
ALTER TABLE notifications ADD COLUMN template_version BIGINT;
