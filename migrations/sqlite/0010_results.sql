-- A job's result objects get a table of their own: one row per produced object (the
-- SEG of each type, the measurement report, each key image) with its SOP Instance UID
-- and spool file. Deliveries reference it; the spool sweep, the API and the dashboard
-- read it. The jobs' SEG columns and the files inside the JSON summary go; each job's
-- time per stage moves to job_timings, which the metrics add up.
CREATE TABLE results (
    id               INTEGER PRIMARY KEY,
    job_id           INTEGER NOT NULL REFERENCES jobs (id),
    -- 'seg', 'sr' or 'key_images'.
    kind             TEXT    NOT NULL,
    -- The SEG's Segmentation Type (BINARY, LABELMAP); NULL for the other kinds.
    variant          TEXT,
    sop_instance_uid TEXT    NOT NULL,
    -- Spool-relative path.
    file             TEXT    NOT NULL,
    UNIQUE (job_id, sop_instance_uid)
);

-- Carried over: each job's BINARY SEG, every object queued for a destination (the
-- LABELMAP SEGs and SRs among them), and the key images kept in the summaries.
INSERT INTO results (job_id, kind, variant, sop_instance_uid, file)
SELECT id, 'seg', 'BINARY', seg_sop_instance_uid, seg_file FROM jobs
WHERE seg_sop_instance_uid IS NOT NULL AND seg_file IS NOT NULL
ORDER BY id;
INSERT OR IGNORE INTO results (job_id, kind, variant, sop_instance_uid, file)
SELECT job_id, object, variant, sop_instance_uid, file FROM deliveries ORDER BY id;
INSERT OR IGNORE INTO results (job_id, kind, variant, sop_instance_uid, file)
SELECT jobs.id, 'key_images', NULL, json_extract(k.value, '$.sop_instance_uid'),
       json_extract(k.value, '$.file')
FROM jobs, json_each(jobs.summary, '$.key_images') AS k
WHERE json_valid(jobs.summary) AND json_extract(k.value, '$.file') IS NOT NULL
  AND json_extract(k.value, '$.sop_instance_uid') IS NOT NULL;

CREATE TABLE job_timings (
    job_id INTEGER NOT NULL REFERENCES jobs (id),
    -- 'volume', 'cascade', 'seg', 'sr', 'key_images' or 'spool'.
    stage  TEXT    NOT NULL,
    ms     INTEGER NOT NULL,
    PRIMARY KEY (job_id, stage)
);
INSERT INTO job_timings (job_id, stage, ms)
SELECT jobs.id, t.key, CAST(t.value AS INTEGER)
FROM jobs, json_each(jobs.summary, '$.timings_ms') AS t
WHERE json_valid(jobs.summary);

-- Deliveries name the result they send (and the BINARY SEG to send instead when a peer
-- refuses LABELMAP) instead of copying its UID and file.
CREATE TABLE deliveries_of_results (
    id                 INTEGER PRIMARY KEY,
    job_id             INTEGER NOT NULL REFERENCES jobs (id),
    destination        TEXT    NOT NULL,
    result_id          INTEGER NOT NULL REFERENCES results (id),
    fallback_result_id INTEGER REFERENCES results (id),
    -- 'pending', 'delivered' or 'failed'.
    state              TEXT    NOT NULL,
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms    INTEGER NOT NULL,
    last_status        TEXT,
    last_error         TEXT,
    created_ms         INTEGER NOT NULL,
    updated_ms         INTEGER NOT NULL,
    delivered_ms       INTEGER,
    node_id            TEXT,
    lease_until_ms     INTEGER,
    UNIQUE (destination, result_id)
);
INSERT INTO deliveries_of_results (id, job_id, destination, result_id, fallback_result_id, state,
                                   attempts, next_attempt_ms, last_status, last_error,
                                   created_ms, updated_ms, delivered_ms, node_id, lease_until_ms)
SELECT d.id, d.job_id, d.destination, r.id, fb.id, d.state, d.attempts, d.next_attempt_ms,
       d.last_status, d.last_error, d.created_ms, d.updated_ms, d.delivered_ms, d.node_id,
       d.lease_until_ms
FROM deliveries d
JOIN results r ON r.job_id = d.job_id AND r.sop_instance_uid = d.sop_instance_uid
LEFT JOIN results fb ON fb.job_id = d.job_id AND fb.file = d.fallback_file;
DROP TABLE deliveries;
ALTER TABLE deliveries_of_results RENAME TO deliveries;
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_ms);
CREATE INDEX deliveries_by_job ON deliveries (job_id);

ALTER TABLE jobs DROP COLUMN seg_sop_instance_uid;
ALTER TABLE jobs DROP COLUMN seg_file;
