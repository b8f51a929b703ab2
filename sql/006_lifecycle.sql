-- 006_lifecycle.sql — processed_messages by time: partitions, retention, the
-- dedupe window (docs/data-lifecycle.md). Safe to apply twice; needs no
-- superuser. A database made before this file had processed_messages as a
-- plain table: it is converted in place, its rows kept (below).
--
-- Layout:
--   processed_messages            partitioned by RANGE (processed_at)
--   processed_messages_pYYYYMMDDTHHMMSS
--                                 one per period, made ahead of time by
--                                 poold_lifecycle_maintain(), each with its
--                                 own PRIMARY KEY (org_id, message_id)
--   processed_messages_legacy     the converted plain table, if any
--   processed_messages_default    rows no range partition takes (a restore of
--                                 old rows, or before the first maintenance)
--   message_partitions            the range partitions and their bounds
--   lifecycle_settings            the dedupe window poold runs with
--
-- Dedupe. A partition's primary key only sees its own rows, so a new row also
-- looks for its id in the partitions before its own, back to the window
-- (partitions are at least as long as the window: one partition at most).
-- That look-up cannot see a row another transaction has not committed yet;
-- two transactions can only be on both sides of a partition boundary at
-- once near it, so there ("the zone": zone_s either side of a boundary) the
-- writers take an advisory lock per id-hash bucket first and look with a
-- fresh snapshot (poold_claim). The zone assumes a writing statement lasts
-- less than zone_s (poold's statements are bounded by
-- POOLD_STATEMENT_TIMEOUT_MS, 5 s; the zone is 60 s).

CREATE TABLE IF NOT EXISTS message_partitions (
    relname  text PRIMARY KEY,
    lo       timestamptz NOT NULL,
    hi       timestamptz NOT NULL CHECK (hi > lo)
);
CREATE INDEX IF NOT EXISTS message_partitions_lo_idx ON message_partitions (lo);

CREATE TABLE IF NOT EXISTS lifecycle_settings (
    only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    window_s   bigint NOT NULL CHECK (window_s >= 1),
    zone_s     double precision NOT NULL CHECK (zone_s > 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The conversion of a plain processed_messages: it becomes the partition
-- processed_messages_legacy, from the beginning of time up to now (rows
-- written until poold's first maintenance go there too; its primary key
-- keeps deduplicating them). Under an ACCESS EXCLUSIVE lock: writers wait
-- for the conversion and then write into the partitioned table.
DO $$
DECLARE
    upper_bound timestamptz;
BEGIN
    IF (SELECT c.relkind FROM pg_class c
        WHERE c.oid = to_regclass('processed_messages')) = 'r' THEN
        LOCK TABLE processed_messages IN ACCESS EXCLUSIVE MODE;
        ALTER TABLE processed_messages RENAME TO processed_messages_legacy;
        IF to_regclass('processed_messages_pkey') IS NOT NULL THEN
            ALTER INDEX processed_messages_pkey
                RENAME TO processed_messages_legacy_pkey;
        END IF;
        -- The same columns (001_schema.sql), without the primary key.
        CREATE TABLE processed_messages
            (LIKE processed_messages_legacy INCLUDING DEFAULTS)
            PARTITION BY RANGE (processed_at);
        -- Past every row, and past now (rows of transactions that started
        -- before the lock).
        SELECT greatest(max(processed_at), clock_timestamp())
               + interval '1 microsecond'
          INTO upper_bound FROM processed_messages_legacy;
        upper_bound := coalesce(upper_bound, clock_timestamp());
        -- The CHECK lets ATTACH skip its scan of every row.
        EXECUTE format('ALTER TABLE processed_messages_legacy ADD CONSTRAINT'
                       ' processed_messages_legacy_range CHECK'
                       ' (processed_at < %L)', upper_bound);
        EXECUTE format('ALTER TABLE processed_messages ATTACH PARTITION'
                       ' processed_messages_legacy FOR VALUES FROM (MINVALUE)'
                       ' TO (%L)', upper_bound);
        INSERT INTO message_partitions (relname, lo, hi)
            VALUES ('processed_messages_legacy', '-infinity', upper_bound);
    END IF;
END $$;

CREATE TABLE IF NOT EXISTS processed_messages_default
    PARTITION OF processed_messages DEFAULT;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'processed_messages_default'::regclass
                   AND contype = 'p') THEN
        ALTER TABLE processed_messages_default
            ADD PRIMARY KEY (org_id, message_id);
    END IF;
END $$;

-- Per statement of the write path: since = the start of the window, lo = the
-- start of the partition now() falls in, in_zone = near its bounds (or no
-- range partition holds now(): every write then takes the careful path).
-- Inlined by the planner (one SELECT, STABLE). Estimated at one row
-- (scalar subqueries, LIMIT 1): a statement built on it must look cheap to
-- the planner, or JIT compiles it on every execution (seconds).
CREATE OR REPLACE FUNCTION poold_dedupe_scope(
    OUT since timestamptz, OUT lo timestamptz, OUT in_zone boolean)
RETURNS SETOF record
LANGUAGE sql STABLE AS $$
    SELECT now() - make_interval(secs => w.window_s),
           coalesce(p.lo, now()),
           p.lo IS NULL
           OR statement_timestamp() < p.lo + make_interval(secs => w.zone_s)
           OR statement_timestamp() >= p.hi - make_interval(secs => w.zone_s)
    FROM (SELECT coalesce((SELECT l.window_s FROM lifecycle_settings l
                           LIMIT 1), 604800) AS window_s,
                 coalesce((SELECT l.zone_s FROM lifecycle_settings l
                           LIMIT 1), 60) AS zone_s) AS w
    LEFT JOIN LATERAL (SELECT mp.lo, mp.hi FROM message_partitions mp
                       WHERE mp.lo <= now() ORDER BY mp.lo DESC LIMIT 1) p
           ON p.hi > now()
$$;

-- The careful path: lock the hash buckets of the (org, id) pairs
-- (p_orgs[k], p_ids[k]) (64 buckets for every org together, locked in one
-- ascending pass: no deadlock, and a bounded number of locks however large
-- the group), then answer the pairs that are free: no row in the window,
-- seen with a snapshot taken after the locks, whatever partition holds
-- it. Returns their ordinals (from 1). p_since NULL (the caller does not
-- know the window): the window lifecycle_settings records.
CREATE OR REPLACE FUNCTION poold_claim_orgs(p_orgs text[], p_ids text[],
                                            p_since timestamptz)
RETURNS bigint[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    free bigint[];
BEGIN
    IF p_since IS NULL THEN
        SELECT s.since INTO p_since FROM poold_dedupe_scope() s;
    END IF;
    PERFORM pg_advisory_xact_lock(21021, b)
       FROM (SELECT DISTINCT abs(hashtext(t.o || '/' || t.i) % 64) AS b
             FROM unnest(p_orgs, p_ids) AS t(o, i) ORDER BY 1) AS buckets;
    SELECT coalesce(array_agg(t.ord), '{}') INTO free
      FROM unnest(p_orgs, p_ids) WITH ORDINALITY AS t(o, i, ord)
     WHERE NOT EXISTS (SELECT 1 FROM processed_messages m
                       WHERE m.org_id = t.o AND m.message_id = t.i
                       AND m.processed_at >= p_since);
    RETURN free;
END $$;

-- The same for one org's ids: answers the free ids themselves. The claim
-- is poold_claim_orgs()'s, so both take the same buckets for an org's id.
CREATE OR REPLACE FUNCTION poold_claim(p_org text, p_ids text[],
                                       p_since timestamptz)
RETURNS text[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    free bigint[];
BEGIN
    free := poold_claim_orgs(
        array_fill(p_org, ARRAY[coalesce(cardinality(p_ids), 0)]), p_ids,
        p_since);
    RETURN (SELECT coalesce(array_agg(t.i ORDER BY t.ord), '{}')
              FROM unnest(p_ids) WITH ORDINALITY AS t(i, ord)
             WHERE t.ord = ANY (free));
END $$;

-- The period maintenance: poold's housekeeping calls it at start-up and at
-- least hourly (a pg_cron job could instead). Records the window, makes the
-- range partitions from the one now() falls in to `ahead` periods ahead,
-- drops whole partitions that ended more than the retention ago (0: none)
-- and deletes the default partition's rows older than it (restored rows
-- only). One caller at a time (another returns at once, having done
-- nothing: the first does the work); lock_timeout bounds its waits for writers,
-- short because writers queue behind a DROP or ATTACH that waits (it wants
-- the parent exclusively): under a long reader (pg_dump) a round gives up
-- after 200 ms, writers stall that long at most, and the round is tried
-- again within a minute. The caller's housekeeping thread also keeps the
-- replica's lease: it must not wait seconds here.
CREATE OR REPLACE FUNCTION poold_lifecycle_maintain(
    p_period_s bigint, p_retention_s bigint, p_window_s bigint,
    p_zone_s double precision, p_ahead integer DEFAULT 2,
    OUT created integer, OUT dropped integer, OUT expired bigint)
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz := clock_timestamp();
    v_lo timestamptz;
    v_hi timestamptz;
    nxt timestamptz;
    stop_at timestamptz;
    part text;
    r record;
BEGIN
    created := 0;
    dropped := 0;
    expired := 0;
    IF p_period_s < 1 OR p_window_s < 1 OR p_zone_s <= 0 OR p_ahead < 1 THEN
        RAISE EXCEPTION 'poold_lifecycle_maintain: bad arguments';
    END IF;
    -- Another replica's round runs: it does this work; this one's is done.
    IF NOT pg_try_advisory_xact_lock(21021, -1) THEN
        RETURN;
    END IF;
    SET LOCAL lock_timeout = '200ms';
    INSERT INTO lifecycle_settings AS s (window_s, zone_s)
        VALUES (p_window_s, p_zone_s)
        ON CONFLICT (only_row) DO UPDATE
        SET window_s = excluded.window_s, zone_s = excluded.zone_s,
            updated_at = now()
        WHERE (s.window_s, s.zone_s) IS DISTINCT FROM
              (excluded.window_s, excluded.zone_s);

    v_lo := to_timestamp(floor(extract(epoch FROM t) / p_period_s) * p_period_s);
    stop_at := t + make_interval(secs => p_period_s * p_ahead);
    WHILE v_lo < stop_at LOOP
        SELECT max(mp.hi) INTO v_hi FROM message_partitions mp
         WHERE mp.lo <= v_lo AND mp.hi > v_lo;
        IF v_hi IS NOT NULL THEN
            v_lo := v_hi; -- covered already
            CONTINUE;
        END IF;
        v_hi := to_timestamp((floor(extract(epoch FROM v_lo) / p_period_s) + 1)
                           * p_period_s);
        SELECT min(mp.lo) INTO nxt FROM message_partitions mp
         WHERE mp.lo > v_lo AND mp.lo < v_hi;
        v_hi := coalesce(nxt, v_hi);
        part := 'processed_messages_p'
                || to_char(v_lo AT TIME ZONE 'UTC', 'YYYYMMDD"T"HH24MISS');
        -- Made apart and attached, with the default partition's rows of its
        -- range moved in (so rows that went to the default meanwhile never
        -- block it); the CHECK spares ATTACH a scan. The rows move while
        -- writers go on, then again under the lock ATTACH takes anyway:
        -- a row committed there after the first move would fail the
        -- round (and every retry while writes go on). Writers wait for
        -- the second pass and ATTACH's check (each a scan of the
        -- default), not for the bulk of the move. A writer of one of
        -- the moved ids (a resend) may hold the lock up: the round then
        -- gives up at its lock_timeout and is tried again.
        EXECUTE format('CREATE TABLE %I (LIKE processed_messages'
                       ' INCLUDING DEFAULTS, PRIMARY KEY (org_id, message_id),'
                       ' CONSTRAINT %I CHECK (processed_at >= %L AND'
                       ' processed_at < %L))', part, part || '_range', v_lo, v_hi);
        FOR pass IN 1..2 LOOP
            IF pass = 2 THEN
                LOCK TABLE processed_messages_default IN ACCESS EXCLUSIVE MODE;
            END IF;
            EXECUTE format('WITH moved AS (DELETE FROM processed_messages_default'
                           ' WHERE processed_at >= %L AND processed_at < %L'
                           ' RETURNING *) INSERT INTO %I SELECT * FROM moved',
                           v_lo, v_hi, part);
        END LOOP;
        EXECUTE format('ALTER TABLE processed_messages ATTACH PARTITION %I'
                       ' FOR VALUES FROM (%L) TO (%L)', part, v_lo, v_hi);
        INSERT INTO message_partitions (relname, lo, hi)
            VALUES (part, v_lo, v_hi);
        created := created + 1;
        v_lo := v_hi;
    END LOOP;

    IF p_retention_s > 0 THEN
        FOR r IN SELECT mp.relname FROM message_partitions mp
                  WHERE mp.hi <= t - make_interval(secs => p_retention_s)
                  ORDER BY mp.lo LOOP
            EXECUTE format('DROP TABLE IF EXISTS %I', r.relname);
            DELETE FROM message_partitions WHERE relname = r.relname;
            dropped := dropped + 1;
        END LOOP;
        DELETE FROM processed_messages_default
         WHERE processed_at < t - make_interval(secs => p_retention_s);
        GET DIAGNOSTICS expired = ROW_COUNT;
    END IF;
    IF created > 0 OR dropped > 0 THEN
        ANALYZE message_partitions, lifecycle_settings;
    END IF;
END $$;
