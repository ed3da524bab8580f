-- Results that say how far they can be trusted: each job's worst organ verdict
-- ('ok', 'warn', 'fail'; NULL before the node assessed results, or without a model),
-- a column so that the jobs needing review are found without reading summaries.
-- Jobs in review ('review', 'rejected') and their held deliveries ('held') need no
-- schema change: states are text.
ALTER TABLE jobs ADD COLUMN qa_verdict TEXT;
