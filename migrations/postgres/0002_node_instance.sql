-- Which process holds a node id: a random token per running node, written with its
-- heartbeat. A node refuses to start while another process's heartbeat under its id is
-- fresher than the lease (two nodes with one id would sweep and take over each other's
-- work); rows written before this column are NULL, an unknown holder.
ALTER TABLE nodes ADD COLUMN instance TEXT;
