-- What a job's processing produced: timings, results or the error that stopped it.
ALTER TABLE jobs ADD COLUMN started_ms INTEGER;
ALTER TABLE jobs ADD COLUMN finished_ms INTEGER;
-- Stable code of the error that failed the job (e.g. missing_slice), NULL otherwise.
ALTER TABLE jobs ADD COLUMN error_code TEXT;
-- JSON object: per-stage timings and results.
ALTER TABLE jobs ADD COLUMN summary TEXT;
