-- How far the webhook sender has read the audit trail (one row).
CREATE TABLE webhook_cursor (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    last_audit_id INTEGER NOT NULL
);
INSERT INTO webhook_cursor (id, last_audit_id) VALUES (1, 0);
