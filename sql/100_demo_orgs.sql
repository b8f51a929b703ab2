-- 100_demo_orgs.sql — the demo orgs org_000 … org_099 with varied rules.
-- Safe to apply twice: existing rows are left as they are (an operator's
-- changes and resizes survive a re-apply).

INSERT INTO orgs (org_id, config)
SELECT format('org_%s', lpad(i::text, 3, '0')),
       jsonb_build_object('rules', CASE i % 5
         -- every org checks the payload size; the rest varies
         WHEN 0 THEN jsonb_build_array(
             jsonb_build_object('type', 'max_payload_bytes', 'value', 4096),
             jsonb_build_object('type', 'hex_payload'))
         WHEN 1 THEN jsonb_build_array(
             jsonb_build_object('type', 'max_payload_bytes', 'value', 1024),
             jsonb_build_object('type', 'min_payload_bytes', 'value', 8),
             jsonb_build_object('type', 'hex_payload'),
             jsonb_build_object('type', 'id_prefix', 'value', 'msg_'))
         WHEN 2 THEN jsonb_build_array(
             jsonb_build_object('type', 'max_payload_bytes', 'value', 256),
             jsonb_build_object('type', 'forbidden_substring', 'value', 'dead'))
         WHEN 3 THEN jsonb_build_array(
             jsonb_build_object('type', 'min_payload_bytes', 'value', 16),
             jsonb_build_object('type', 'max_payload_bytes', 'value', 65536),
             jsonb_build_object('type', 'id_prefix', 'value', 'msg_'),
             jsonb_build_object('type', 'forbidden_substring', 'value', 'ffff'),
             jsonb_build_object('type', 'hex_payload'))
         ELSE jsonb_build_array(
             jsonb_build_object('type', 'max_payload_bytes', 'value', 8192))
       END)
FROM generate_series(0, 99) AS i
ON CONFLICT (org_id) DO NOTHING;
