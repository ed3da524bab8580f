-- A job's result is several objects (the SEG, the measurement report, key images): one
-- delivery per (job, destination, instance). `variant` is the SEG's type (BINARY,
-- LABELMAP).
CREATE TABLE deliveries_by_object (
    id                   INTEGER PRIMARY KEY,
    job_id               INTEGER NOT NULL REFERENCES jobs (id),
    destination          TEXT    NOT NULL,
    -- 'seg', 'sr' or 'key_images'.
    object               TEXT    NOT NULL,
    -- 'pending', 'delivered' or 'failed'.
    state                TEXT    NOT NULL,
    variant              TEXT,
    sop_instance_uid     TEXT    NOT NULL,
    file                 TEXT    NOT NULL,
    -- The BINARY SEG to send when the peer refuses LABELMAP.
    fallback_file        TEXT,
    attempts             INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms      INTEGER NOT NULL,
    last_status          TEXT,
    last_error           TEXT,
    created_ms           INTEGER NOT NULL,
    updated_ms           INTEGER NOT NULL,
    delivered_ms         INTEGER,
    UNIQUE (job_id, destination, sop_instance_uid)
);
INSERT INTO deliveries_by_object (id, job_id, destination, object, state, variant, sop_instance_uid,
                                  file, fallback_file, attempts, next_attempt_ms, last_status,
                                  last_error, created_ms, updated_ms, delivered_ms)
SELECT id, job_id, destination, 'seg', state, seg_type, seg_sop_instance_uid, seg_file, fallback_file,
       attempts, next_attempt_ms, last_status, last_error, created_ms, updated_ms, delivered_ms
FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_by_object RENAME TO deliveries;
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_ms);
