-- pgbench_insert100.sql — the anchor for POST /process/batch of 100
-- messages: one 100-row INSERT … ON CONFLICT DO NOTHING per transaction,
-- run with `pgbench -M prepared`. Rows/s = tps × 100. Ids are random per
-- transaction (as in pgbench_insert1.sql) with the row's number appended.
-- The payload digest is given, as poold gives it (its service computes the
-- SHA-256 while it evaluates the rules): PostgreSQL hashes nothing.
\set org random(0, 9)
\set id random(1, 1000000000000000)
INSERT INTO processed_messages (org_id, message_id, passed, checks,
 failed_rules, payload_sha256)
SELECT 'org_00' || :org, 'msg_pgb_' || :id || '_' || g, true, 2, '{}'::text[],
 '\x9f3a1c27e5b04d6f8a2b9c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071'::bytea
FROM generate_series(1, 100) AS g
ON CONFLICT DO NOTHING;
