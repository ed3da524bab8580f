-- segnode schema for PostgreSQL: the same tables and columns as the SQLite migrations
-- produce (migrations/sqlite), for several nodes sharing one database. Times are Unix
-- epoch milliseconds (UTC).

CREATE TABLE series (
    id                 BIGSERIAL PRIMARY KEY,
    series_uid         TEXT    NOT NULL UNIQUE,
    study_uid          TEXT    NOT NULL,
    patient_id         TEXT,
    accession_number   TEXT,
    modality           TEXT,
    series_description TEXT,
    calling_ae         TEXT    NOT NULL,
    -- Bumped whenever the series' content changes (an instance added or replaced).
    revision           BIGINT  NOT NULL DEFAULT 0,
    -- 'receiving' until no instance arrived for the stable age, then 'stable'.
    state              TEXT    NOT NULL CHECK (state IN ('receiving', 'stable')),
    first_received_ms  BIGINT  NOT NULL,
    last_received_ms   BIGINT  NOT NULL
);
CREATE INDEX series_by_state ON series (state, last_received_ms);
CREATE INDEX series_by_study ON series (study_uid);

CREATE TABLE instances (
    id                 BIGSERIAL PRIMARY KEY,
    series_id          BIGINT  NOT NULL REFERENCES series (id),
    sop_instance_uid   TEXT    NOT NULL UNIQUE,
    sop_class_uid      TEXT    NOT NULL,
    transfer_syntax    TEXT    NOT NULL,
    -- Spool-relative path, made from an internal id, never from received text.
    file_name          TEXT    NOT NULL UNIQUE,
    size_bytes         BIGINT  NOT NULL,
    sha256             TEXT    NOT NULL,
    modality           TEXT,
    image_type         TEXT,
    number_of_frames   BIGINT  NOT NULL,
    slice_thickness_mm DOUBLE PRECISION,
    -- Image Orientation (Patient): six numbers separated by backslashes.
    orientation        TEXT,
    received_ms        BIGINT  NOT NULL,
    replaced_count     BIGINT  NOT NULL DEFAULT 0,
    -- The node that received it.
    node_id            TEXT
);
CREATE INDEX instances_by_series ON instances (series_id);
CREATE INDEX instances_by_time ON instances (received_ms);

CREATE TABLE jobs (
    id                   BIGSERIAL PRIMARY KEY,
    series_id            BIGINT  NOT NULL REFERENCES series (id),
    series_revision      BIGINT  NOT NULL,
    state                TEXT    NOT NULL,
    reason               TEXT,
    instance_count       BIGINT  NOT NULL,
    superseded_by        BIGINT  REFERENCES jobs (id),
    created_ms           BIGINT  NOT NULL,
    updated_ms           BIGINT  NOT NULL,
    started_ms           BIGINT,
    finished_ms          BIGINT,
    -- Stable code of the error that failed the job (e.g. missing_slice), NULL otherwise.
    error_code           TEXT,
    -- JSON object: per-stage timings and results.
    summary              TEXT,
    seg_sop_instance_uid TEXT,
    seg_file             TEXT,
    -- The calling AE of the association that sent this revision.
    calling_ae           TEXT    NOT NULL DEFAULT '',
    starts               BIGINT  NOT NULL DEFAULT 0,
    -- The node that holds (or last held) the job, and until when its lease runs.
    node_id              TEXT,
    lease_until_ms       BIGINT,
    UNIQUE (series_id, series_revision)
);
CREATE INDEX jobs_by_state ON jobs (state, id);

CREATE TABLE audit (
    id               BIGSERIAL PRIMARY KEY,
    at_ms            BIGINT  NOT NULL,
    event            TEXT    NOT NULL,
    calling_ae       TEXT,
    peer             TEXT,
    study_uid        TEXT,
    series_uid       TEXT,
    patient_id       TEXT,
    accession_number TEXT,
    job_id           BIGINT,
    -- JSON object with event-specific fields (reason, counts, status, ...).
    detail           TEXT    NOT NULL DEFAULT '{}',
    -- The node that wrote it.
    node_id          TEXT
);
CREATE INDEX audit_by_time ON audit (at_ms);
CREATE INDEX audit_by_study ON audit (study_uid);
CREATE INDEX audit_by_event ON audit (event);

CREATE FUNCTION audit_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit is append-only';
END;
$$;
CREATE TRIGGER audit_is_append_only_update BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_is_append_only();
CREATE TRIGGER audit_is_append_only_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_is_append_only();

-- The outbox: one delivery per (job, destination, instance), retried with back-off
-- until delivered or out of attempts; a node holds a delivery under a lease while it
-- sends it.
CREATE TABLE deliveries (
    id                   BIGSERIAL PRIMARY KEY,
    job_id               BIGINT  NOT NULL REFERENCES jobs (id),
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
    attempts             BIGINT  NOT NULL DEFAULT 0,
    next_attempt_ms      BIGINT  NOT NULL,
    last_status          TEXT,
    last_error           TEXT,
    created_ms           BIGINT  NOT NULL,
    updated_ms           BIGINT  NOT NULL,
    delivered_ms         BIGINT,
    node_id              TEXT,
    lease_until_ms       BIGINT,
    UNIQUE (job_id, destination, sop_instance_uid)
);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_ms);

-- How far the webhook sender has read the audit trail (one row), and which node sends.
CREATE TABLE webhook_cursor (
    id             BIGINT PRIMARY KEY CHECK (id = 1),
    last_audit_id  BIGINT NOT NULL,
    node_id        TEXT,
    lease_until_ms BIGINT
);
INSERT INTO webhook_cursor (id, last_audit_id) VALUES (1, 0);

CREATE TABLE nodes (
    node_id          TEXT    PRIMARY KEY,
    version          TEXT    NOT NULL,
    started_ms       BIGINT  NOT NULL,
    seen_ms          BIGINT  NOT NULL,
    -- The node's clock minus the database's at its last heartbeat.
    clock_offset_ms  BIGINT  NOT NULL
);
