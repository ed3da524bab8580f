-- The outbox: one delivery per (job, destination), retried with back-off until
-- delivered or out of attempts. Survives restarts.
CREATE TABLE deliveries (
    id                   INTEGER PRIMARY KEY,
    job_id               INTEGER NOT NULL REFERENCES jobs (id),
    destination          TEXT    NOT NULL,
    -- 'pending', 'delivered' or 'failed'.
    state                TEXT    NOT NULL,
    seg_type             TEXT    NOT NULL,
    seg_sop_instance_uid TEXT    NOT NULL,
    seg_file             TEXT    NOT NULL,
    -- The BINARY SEG to send when the peer refuses LABELMAP.
    fallback_file        TEXT,
    attempts             INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms      INTEGER NOT NULL,
    last_status          TEXT,
    last_error           TEXT,
    created_ms           INTEGER NOT NULL,
    updated_ms           INTEGER NOT NULL,
    delivered_ms         INTEGER,
    UNIQUE (job_id, destination)
);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_ms);
