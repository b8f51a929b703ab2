-- setup.sql — the database for run.sh: sql/ applied first (by the caller).
-- Partitions as poold makes them by default (7-day periods), a previous
-- partition holding 500 000 rows (the window's probe goes into it), and
-- pm_plain: the previous schema's plain table with the same rows.
SELECT * FROM poold_lifecycle_maintain(604800, 2592000, 604800, 60);
DO $$
DECLARE
    lo timestamptz := (SELECT min(p.lo) FROM message_partitions p)
                      - interval '7 days';
BEGIN
    IF to_regclass('processed_messages_prev') IS NULL THEN
        EXECUTE format('CREATE TABLE processed_messages_prev PARTITION OF'
                       ' processed_messages (PRIMARY KEY (org_id, message_id))'
                       ' FOR VALUES FROM (%L) TO (%L)', lo,
                       lo + interval '7 days');
        INSERT INTO message_partitions
            VALUES ('processed_messages_prev', lo, lo + interval '7 days');
        INSERT INTO processed_messages (org_id, message_id, passed, checks,
                                        payload_sha256, processed_at)
        SELECT 'org_' || (g % 100), 'prev-' || g, true, 1, sha256('p'),
               lo + interval '1 day'
        FROM generate_series(1, 500000) g;
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS pm_plain (
    org_id text NOT NULL, message_id text NOT NULL,
    passed boolean NOT NULL, checks integer NOT NULL,
    failed_rules text[] NOT NULL DEFAULT '{}', payload_sha256 bytea NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, message_id));
INSERT INTO pm_plain SELECT * FROM processed_messages_prev
    WHERE NOT EXISTS (SELECT 1 FROM pm_plain LIMIT 1);
ANALYZE pm_plain;
ANALYZE processed_messages;
