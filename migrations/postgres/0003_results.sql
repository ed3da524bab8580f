-- A job's result objects get a table of their own: one row per produced object (the
-- SEG of each type, the measurement report, each key image) with its SOP Instance UID
-- and spool file. Deliveries reference it; the spool sweep, the API and the dashboard
-- read it. The jobs' SEG columns and the files inside the JSON summary go; each job's
-- time per stage moves to job_timings, which the metrics add up. (As
-- migrations/sqlite/0010_results.sql.)
CREATE TABLE results (
    id               BIGSERIAL PRIMARY KEY,
    job_id           BIGINT  NOT NULL REFERENCES jobs (id),
    -- 'seg', 'sr' or 'key_images'.
    kind             TEXT    NOT NULL,
    -- The SEG's Segmentation Type (BINARY, LABELMAP); NULL for the other kinds.
    variant          TEXT,
    sop_instance_uid TEXT    NOT NULL,
    -- Spool-relative path.
    file             TEXT    NOT NULL,
    UNIQUE (job_id, sop_instance_uid)
);

INSERT INTO results (job_id, kind, variant, sop_instance_uid, file)
SELECT id, 'seg', 'BINARY', seg_sop_instance_uid, seg_file FROM jobs
WHERE seg_sop_instance_uid IS NOT NULL AND seg_file IS NOT NULL
ORDER BY id;
INSERT INTO results (job_id, kind, variant, sop_instance_uid, file)
SELECT job_id, object, variant, sop_instance_uid, file FROM deliveries ORDER BY id
ON CONFLICT DO NOTHING;
INSERT INTO results (job_id, kind, variant, sop_instance_uid, file)
SELECT jobs.id, 'key_images', NULL, k.value ->> 'sop_instance_uid', k.value ->> 'file'
FROM jobs, jsonb_array_elements(COALESCE(jobs.summary::jsonb -> 'key_images', '[]'::jsonb)) AS k
WHERE k.value ->> 'file' IS NOT NULL AND k.value ->> 'sop_instance_uid' IS NOT NULL
ON CONFLICT DO NOTHING;

CREATE TABLE job_timings (
    job_id BIGINT NOT NULL REFERENCES jobs (id),
    -- 'volume', 'cascade', 'seg', 'sr', 'key_images' or 'spool'.
    stage  TEXT   NOT NULL,
    ms     BIGINT NOT NULL,
    PRIMARY KEY (job_id, stage)
);
INSERT INTO job_timings (job_id, stage, ms)
SELECT jobs.id, t.key, CAST(t.value AS BIGINT)
FROM jobs, jsonb_each_text(COALESCE(jobs.summary::jsonb -> 'timings_ms', '{}'::jsonb)) AS t;

-- Deliveries name the result they send (and the BINARY SEG to send instead when a peer
-- refuses LABELMAP) instead of copying its UID and file.
ALTER TABLE deliveries ADD COLUMN result_id BIGINT REFERENCES results (id);
ALTER TABLE deliveries ADD COLUMN fallback_result_id BIGINT REFERENCES results (id);
UPDATE deliveries d SET result_id = r.id
FROM results r WHERE r.job_id = d.job_id AND r.sop_instance_uid = d.sop_instance_uid;
UPDATE deliveries d SET fallback_result_id = r.id
FROM results r WHERE r.job_id = d.job_id AND r.file = d.fallback_file;
DELETE FROM deliveries WHERE result_id IS NULL;
ALTER TABLE deliveries ALTER COLUMN result_id SET NOT NULL;
ALTER TABLE deliveries DROP COLUMN object;
ALTER TABLE deliveries DROP COLUMN variant;
ALTER TABLE deliveries DROP COLUMN sop_instance_uid;
ALTER TABLE deliveries DROP COLUMN file;
ALTER TABLE deliveries DROP COLUMN fallback_file;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_once UNIQUE (destination, result_id);
CREATE INDEX deliveries_by_job ON deliveries (job_id);

ALTER TABLE jobs DROP COLUMN seg_sop_instance_uid;
ALTER TABLE jobs DROP COLUMN seg_file;
