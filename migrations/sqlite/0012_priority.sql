-- Which queued job a worker takes first: 'stat' before 'routine', then the oldest.
ALTER TABLE jobs ADD COLUMN priority TEXT NOT NULL DEFAULT 'routine';
CREATE INDEX jobs_queue ON jobs (state, priority, id);
