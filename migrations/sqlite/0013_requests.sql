-- Processing on request: what was asked for, where it stands, its history, and the
-- series it covers with the job each one got.
CREATE TABLE requests (
    id               INTEGER PRIMARY KEY,
    study_uid        TEXT,
    accession_number TEXT,
    series_uid       TEXT,
    source           TEXT    NOT NULL,
    priority         TEXT    NOT NULL DEFAULT 'routine',
    forced           INTEGER NOT NULL DEFAULT 0,
    -- 'queued', 'retrieving', 'processing', 'done' or 'failed'.
    state            TEXT    NOT NULL,
    reason           TEXT,
    -- The node working on it.
    node_id          TEXT,
    created_ms       INTEGER NOT NULL,
    updated_ms       INTEGER NOT NULL,
    -- JSON: series found, sub-operation counts, jobs.
    progress         TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX requests_queue ON requests (state, priority, id);

CREATE TABLE request_events (
    id         INTEGER PRIMARY KEY,
    request_id INTEGER NOT NULL REFERENCES requests (id),
    at_ms      INTEGER NOT NULL,
    state      TEXT    NOT NULL,
    detail     TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX request_events_by_request ON request_events (request_id, id);

CREATE TABLE request_series (
    request_id INTEGER NOT NULL REFERENCES requests (id),
    series_uid TEXT    NOT NULL,
    study_uid  TEXT    NOT NULL,
    job_id     INTEGER REFERENCES jobs (id),
    -- 1 when the job existed before the request (same model, same instances).
    reused     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (request_id, series_uid)
);
CREATE INDEX request_series_by_series ON request_series (series_uid);
