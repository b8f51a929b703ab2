-- pgbench_insert1.sql — the anchor for one message: a single-row
-- INSERT … ON CONFLICT DO NOTHING into processed_messages, one
-- transaction each, as run.sh runs it: `pgbench -M prepared` (parsed and
-- planned once per connection: PostgreSQL's strongest configuration for a
-- repeated statement). Ids are random in 1..10^15 (a collision in a run is
-- about as likely as 1 in 10^7); the payload digest is given, as poold
-- gives it (its service computes the SHA-256): PostgreSQL hashes nothing.
\set org random(0, 9)
\set id random(1, 1000000000000000)
INSERT INTO processed_messages (org_id, message_id, passed, checks,
 failed_rules, payload_sha256)
VALUES ('org_00' || :org, 'msg_pgb_' || :id, true, 2, '{}'::text[],
 '\x9f3a1c27e5b04d6f8a2b9c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071'::bytea)
ON CONFLICT DO NOTHING;
