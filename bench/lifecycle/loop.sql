-- loop.sql — server CPU per one-message INSERT, no commit: SELECT
-- bench_insert_loop(kind, n) runs n INSERTs of fresh ids in a PL/pgSQL loop
-- (its static SQL runs as prepared statements with parameters and a cached
-- plan, as poold's do) and answers µs per statement. Run it inside
-- BEGIN … ROLLBACK (bench/lifecycle/cpu.sh). Needs setup.sql first.
--   a  plain table, the statement before partitioning
--   b  partitioned table, routing only (ON CONFLICT DO NOTHING)
--   c  partitioned table, the statement of 4416b85 (poold_dedupe_scope())
--   d  today's fast form (src/service.c svc_insert_one_fast_sql), on the
--      fast path
--   e  today's general form (svc_insert_one_sql), on the probe path
--   f  today's general form, on the fast path
-- The bounds are what poold passes: the current partition's, the window 7
-- days, the zone 60 s; for d and f the fast path's start is set just
-- before now (as later in a partition twice the window long).
CREATE OR REPLACE FUNCTION bench_insert_loop(kind text, n integer)
RETURNS double precision LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz;
    id text;
    w interval := '604800 seconds';
    cur_lo timestamptz;
    cur_hi timestamptz;
    calm_from timestamptz;
    calm_to timestamptz;
    fast_from timestamptz;
    tag text := md5(random()::text);
BEGIN
    SELECT lo, hi INTO cur_lo, cur_hi FROM message_partitions
     WHERE lo <= now() AND hi > now();
    calm_from := cur_lo + interval '60 seconds';
    calm_to := cur_hi - interval '60 seconds';
    fast_from := cur_lo + w;
    IF kind IN ('d', 'f') THEN
        fast_from := now() - interval '1 second';
    ELSIF kind = 'e' THEN
        fast_from := now() + interval '1 hour';
    END IF;
    t0 := clock_timestamp();
    FOR k IN 1..n LOOP
        id := tag || k;
        IF kind = 'a' THEN
            INSERT INTO pm_plain (org_id, message_id, passed, checks,
                                  failed_rules, payload_sha256)
            VALUES ('org_001', id, true, 1, '{}'::text[],
                    sha256('payload'::bytea))
            ON CONFLICT (org_id, message_id) DO NOTHING;
        ELSIF kind = 'b' THEN
            INSERT INTO processed_messages (org_id, message_id, passed, checks,
                                            failed_rules, payload_sha256)
            VALUES ('org_001', id, true, 1, '{}'::text[],
                    sha256('payload'::bytea))
            ON CONFLICT DO NOTHING;
        ELSIF kind = 'c' THEN
            WITH s AS (SELECT * FROM poold_dedupe_scope()),
                 c AS (SELECT poold_claim('org_001', ARRAY[id], s.since) AS free
                       FROM s WHERE s.in_zone)
            INSERT INTO processed_messages (org_id, message_id, passed, checks,
                                            failed_rules, payload_sha256)
            SELECT 'org_001', id, true, 1, '{}'::text[],
                   sha256('payload'::bytea) FROM s
            WHERE CASE WHEN s.in_zone
                       THEN id = ANY ((SELECT free FROM c)::text[])
                       ELSE NOT EXISTS (SELECT 1 FROM processed_messages p
                            WHERE p.org_id = 'org_001' AND p.message_id = id
                            AND p.processed_at >= s.since
                            AND p.processed_at < s.lo
                            AND p.processed_at < now()) END
            ON CONFLICT DO NOTHING;
        ELSIF kind = 'd' THEN
            WITH c AS (SELECT poold_claim('org_001', ARRAY[id], now() - w)
                              AS free
                       WHERE NOT coalesce(now() >= fast_from
                                          AND now() < calm_to, false))
            INSERT INTO processed_messages (org_id, message_id, passed, checks,
                                            failed_rules, payload_sha256)
            SELECT 'org_001', id, true, 1, '{}'::text[],
                   sha256('payload'::bytea)
            WHERE CASE WHEN now() >= fast_from AND now() < calm_to THEN true
                       ELSE id = ANY ((SELECT free FROM c)::text[]) END
            ON CONFLICT DO NOTHING;
        ELSE
            WITH c AS (SELECT poold_claim('org_001', ARRAY[id], now() - w)
                              AS free
                       WHERE NOT coalesce(now() >= calm_from
                                          AND now() < calm_to, false))
            INSERT INTO processed_messages (org_id, message_id, passed, checks,
                                            failed_rules, payload_sha256)
            SELECT 'org_001', id, true, 1, '{}'::text[],
                   sha256('payload'::bytea)
            WHERE CASE WHEN now() >= fast_from AND now() < calm_to THEN true
                       WHEN now() >= calm_from AND now() < calm_to
                       THEN NOT EXISTS (SELECT 1 FROM processed_messages p
                            WHERE p.org_id = 'org_001' AND p.message_id = id
                            AND p.processed_at >= now() - w
                            AND p.processed_at < cur_lo)
                       ELSE id = ANY ((SELECT free FROM c)::text[]) END
            ON CONFLICT DO NOTHING;
        END IF;
    END LOOP;
    RETURN extract(epoch FROM clock_timestamp() - t0) * 1e6 / n;
END $$;

-- bench_many_loop(kind, n, m): n statements of m messages each (the batch
-- form, unnest of arrays), µs per message: kinds a, b and d as above (d:
-- svc_insert_many_fast_sql on the fast path).
CREATE OR REPLACE FUNCTION bench_many_loop(kind text, n integer, m integer)
RETURNS double precision LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz;
    ids text[];
    w interval := '604800 seconds';
    calm_to timestamptz := now() + interval '1 day';
    fast_from timestamptz := now() - interval '1 second';
    tag text := md5(random()::text);
    passed boolean[] := array_fill(true, ARRAY[m]);
    checks integer[] := array_fill(1, ARRAY[m]);
    failed text[] := array_fill('{}'::text, ARRAY[m]);
    payloads bytea[] := array_fill('payload'::bytea, ARRAY[m]);
BEGIN
    t0 := clock_timestamp();
    FOR k IN 1..n LOOP
        ids := ARRAY(SELECT tag || k || '-' || g FROM generate_series(1, m) g);
        IF kind = 'a' THEN
            INSERT INTO pm_plain (org_id, message_id, passed, checks, failed_rules, payload_sha256)
            SELECT 'org_001', i.message_id, i.passed, i.checks, i.failed::text[], sha256(i.payload)
            FROM unnest(ids, passed, checks, failed, payloads) AS i(message_id, passed, checks, failed, payload)
            ON CONFLICT (org_id, message_id) DO NOTHING;
        ELSIF kind = 'b' THEN
            INSERT INTO processed_messages (org_id, message_id, passed, checks, failed_rules, payload_sha256)
            SELECT 'org_001', i.message_id, i.passed, i.checks, i.failed::text[], sha256(i.payload)
            FROM unnest(ids, passed, checks, failed, payloads) AS i(message_id, passed, checks, failed, payload)
            ON CONFLICT DO NOTHING;
        ELSE
            WITH c AS (SELECT poold_claim('org_001', ids, now() - w) AS free
                       WHERE NOT coalesce(now() >= fast_from AND now() < calm_to, false))
            INSERT INTO processed_messages (org_id, message_id, passed, checks, failed_rules, payload_sha256)
            SELECT 'org_001', i.message_id, i.passed, i.checks, i.failed::text[], sha256(i.payload)
            FROM unnest(ids, passed, checks, failed, payloads) AS i(message_id, passed, checks, failed, payload)
            WHERE CASE WHEN now() >= fast_from AND now() < calm_to THEN true
                       ELSE i.message_id = ANY ((SELECT free FROM c)::text[]) END
            ON CONFLICT DO NOTHING;
        END IF;
    END LOOP;
    RETURN extract(epoch FROM clock_timestamp() - t0) * 1e6 / (n * m);
END $$;
