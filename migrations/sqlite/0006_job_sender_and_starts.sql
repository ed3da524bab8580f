-- Each job keeps the calling AE of the association that sent its revision (the
-- series' calling AE follows later revisions), and counts how often a worker started
-- it: a job that stops the node every time ends failed after a few starts.
ALTER TABLE jobs ADD COLUMN calling_ae TEXT NOT NULL DEFAULT '';
UPDATE jobs SET calling_ae = (SELECT calling_ae FROM series WHERE series.id = jobs.series_id);
ALTER TABLE jobs ADD COLUMN starts INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET starts = 1 WHERE started_ms IS NOT NULL;
