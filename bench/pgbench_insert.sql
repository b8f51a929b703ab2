-- pgbench_insert.sql — PostgreSQL's own rate for poold's INSERT.
-- The statement is src/service.c's svc_commit_sql (insert the result row or
-- read the stored one, in one autocommit statement); run it with
-- `pgbench -M extended` so it travels like PQexecParams (unnamed statement,
-- parameters apart). Ids are random in 1..10^15: a collision in a 10 s run
-- is about as likely as 1 in 10^7. The payload is a fixed string of 128 hex
-- characters hashed as its 128 bytes, like poold's binary $6.
\set org random(0, 9)
\set id random(1, 1000000000000000)
WITH ins AS (
 INSERT INTO processed_messages (org_id, message_id, passed, checks,
  failed_rules, payload_sha256)
 VALUES ('org_00' || :org, 'msg_pgb_' || :id, true::boolean, 2::integer,
  '{}'::text[],
  sha256('9f3a1c27e5b04d6f8a2b9c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60719f3a1c27e5b04d6f8a2b9c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071'::bytea))
 ON CONFLICT DO NOTHING RETURNING 1)
SELECT true, NULL::boolean, NULL::integer, NULL::text, NULL::boolean
FROM ins
UNION ALL
SELECT false, p.passed, p.checks, p.failed_rules::text,
 p.payload_sha256 = sha256('9f3a1c27e5b04d6f8a2b9c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60719f3a1c27e5b04d6f8a2b9c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071'::bytea)
FROM processed_messages p
WHERE p.org_id = 'org_00' || :org AND p.message_id = 'msg_pgb_' || :id
AND NOT EXISTS (SELECT 1 FROM ins);
