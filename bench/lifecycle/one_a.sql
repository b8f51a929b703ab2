\set id random(1, 2000000000)
INSERT INTO pm_plain (org_id, message_id, passed, checks, failed_rules, payload_sha256) VALUES ('org_001', ('m' || :id || '-' || :client_id), true, 1, '{}'::text[], sha256('payload'::bytea)) ON CONFLICT (org_id, message_id) DO NOTHING;
