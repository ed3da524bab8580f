-- The SEG a job produced: its SOP Instance UID and its file in the spool.
ALTER TABLE jobs ADD COLUMN seg_sop_instance_uid TEXT;
ALTER TABLE jobs ADD COLUMN seg_file TEXT;
