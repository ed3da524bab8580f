-- segnode schema, version 1: received series and instances, jobs, append-only audit.
-- Times are Unix epoch milliseconds (UTC).

CREATE TABLE series (
    id                 INTEGER PRIMARY KEY,
    series_uid         TEXT    NOT NULL UNIQUE,
    study_uid          TEXT    NOT NULL,
    patient_id         TEXT,
    accession_number   TEXT,
    modality           TEXT,
    series_description TEXT,
    calling_ae         TEXT    NOT NULL,
    -- Bumped whenever the series' content changes (an instance added or replaced).
    revision           INTEGER NOT NULL DEFAULT 0,
    -- 'receiving' until no instance arrived for the stable age, then 'stable'.
    state              TEXT    NOT NULL CHECK (state IN ('receiving', 'stable')),
    first_received_ms  INTEGER NOT NULL,
    last_received_ms   INTEGER NOT NULL
);
CREATE INDEX series_by_state ON series (state, last_received_ms);
CREATE INDEX series_by_study ON series (study_uid);

CREATE TABLE instances (
    id                 INTEGER PRIMARY KEY,
    series_id          INTEGER NOT NULL REFERENCES series (id),
    sop_instance_uid   TEXT    NOT NULL UNIQUE,
    sop_class_uid      TEXT    NOT NULL,
    transfer_syntax    TEXT    NOT NULL,
    -- Spool-relative path, made from an internal id, never from received text.
    file_name          TEXT    NOT NULL UNIQUE,
    size_bytes         INTEGER NOT NULL,
    sha256             TEXT    NOT NULL,
    modality           TEXT,
    image_type         TEXT,
    number_of_frames   INTEGER NOT NULL,
    slice_thickness_mm REAL,
    -- Image Orientation (Patient): six numbers separated by backslashes.
    orientation        TEXT,
    received_ms        INTEGER NOT NULL,
    replaced_count     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX instances_by_series ON instances (series_id);

CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY,
    series_id        INTEGER NOT NULL REFERENCES series (id),
    series_revision  INTEGER NOT NULL,
    state            TEXT    NOT NULL,
    reason           TEXT,
    instance_count   INTEGER NOT NULL,
    superseded_by    INTEGER REFERENCES jobs (id),
    created_ms       INTEGER NOT NULL,
    updated_ms       INTEGER NOT NULL,
    UNIQUE (series_id, series_revision)
);
CREATE INDEX jobs_by_state ON jobs (state, id);

CREATE TABLE audit (
    id               INTEGER PRIMARY KEY,
    at_ms            INTEGER NOT NULL,
    event            TEXT    NOT NULL,
    calling_ae       TEXT,
    peer             TEXT,
    study_uid        TEXT,
    series_uid       TEXT,
    patient_id       TEXT,
    accession_number TEXT,
    job_id           INTEGER,
    -- JSON object with event-specific fields (reason, counts, status, ...).
    detail           TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_by_time ON audit (at_ms);
CREATE INDEX audit_by_study ON audit (study_uid);

CREATE TRIGGER audit_is_append_only_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit is append-only');
END;
CREATE TRIGGER audit_is_append_only_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit is append-only');
END;
