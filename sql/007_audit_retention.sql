-- 007_audit_retention.sql — audit entries are kept for
-- POOLD_AUDIT_RETENTION_DAYS: poold's housekeeping deletes older ones,
-- oldest first, at start-up and hourly (docs/data-lifecycle.md). This index
-- finds them without reading the whole log. Safe to apply twice.
CREATE INDEX IF NOT EXISTS audit_log_at_idx ON audit_log (at);
