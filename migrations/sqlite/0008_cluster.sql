-- Nodes sharing one database: who received an instance, who holds a job or a
-- delivery and until when (a lease, renewed while the work runs; an expired one lets
-- another node take the work over), who wrote each audit record, and each node's
-- heartbeat with its clock offset to the database's.
ALTER TABLE instances ADD COLUMN node_id TEXT;
ALTER TABLE jobs ADD COLUMN node_id TEXT;
ALTER TABLE jobs ADD COLUMN lease_until_ms INTEGER;
ALTER TABLE deliveries ADD COLUMN node_id TEXT;
ALTER TABLE deliveries ADD COLUMN lease_until_ms INTEGER;
ALTER TABLE audit ADD COLUMN node_id TEXT;
ALTER TABLE webhook_cursor ADD COLUMN node_id TEXT;
ALTER TABLE webhook_cursor ADD COLUMN lease_until_ms INTEGER;
CREATE TABLE nodes (
    node_id          TEXT    PRIMARY KEY,
    version          TEXT    NOT NULL,
    started_ms       INTEGER NOT NULL,
    seen_ms          INTEGER NOT NULL,
    -- The node's clock minus the database's at its last heartbeat (0 on SQLite, where
    -- they are one machine).
    clock_offset_ms  INTEGER NOT NULL
);
