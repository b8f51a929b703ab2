-- 005_org_changes.sql — which orgs changed, and in which transaction, so
-- that poold reads only what changed instead of a digest of every row each
-- second (issue 19: a million orgs). Safe to apply twice; needs no superuser.
--
-- Every statement that writes orgs or org_keys notes the org ids it touched
-- here, with the writing transaction's id (xid8: 64 bits, never wraps). A
-- statement touching more than 10000 rows notes one '*' instead: "reload
-- everything" (a bulk load must not double itself in this table).
--
-- Why transaction ids and not a sequence: a sequence number is taken when a
-- row is written, and a transaction that commits after a later-numbered one
-- would be missed by "everything above the last number I saw". poold keeps
-- the snapshot (pg_current_snapshot()) its last read ran under and next
-- reads the rows whose transaction that snapshot did not see:
--   xid >= pg_snapshot_xmin(last) AND NOT pg_visible_in_snapshot(xid, last)
-- A transaction still running at the last read, whatever its number, is
-- read once it has committed; one that had committed was read then. The
-- index on xid keeps the read proportional to what changed.
--
-- Rows older than a day are removed by poold (catalog_prune_changes); a
-- poold that has not read for that long reloads everything instead.
CREATE TABLE IF NOT EXISTS org_changes (
    xid     xid8 NOT NULL DEFAULT pg_current_xact_id(),
    org_id  text NOT NULL,
    at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS org_changes_xid_idx ON org_changes (xid);
CREATE INDEX IF NOT EXISTS org_changes_at_idx ON org_changes (at);
-- The rate limits poold loads at start read only the orgs that have one.
CREATE INDEX IF NOT EXISTS orgs_rate_limited_idx ON orgs (org_id)
    WHERE rate_limit_rps IS NOT NULL;

-- One function for every table and event: it reads the transition tables
-- the trigger declares (new_rows, old_rows), which carry org_id.
CREATE OR REPLACE FUNCTION org_changes_note() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    ids text[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(DISTINCT org_id) INTO ids FROM new_rows;
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT array_agg(DISTINCT org_id) INTO ids FROM
            (SELECT org_id FROM new_rows UNION ALL SELECT org_id FROM old_rows) u;
    ELSE
        SELECT array_agg(DISTINCT org_id) INTO ids FROM old_rows;
    END IF;
    IF cardinality(ids) > 10000 THEN
        INSERT INTO org_changes (org_id) VALUES ('*');
    ELSIF cardinality(ids) > 0 THEN
        INSERT INTO org_changes (org_id) SELECT unnest(ids);
    END IF;
    RETURN NULL;
END $$;

-- A trigger with transition tables has one event: three per table. TRUNCATE
-- has no rows: it notes '*'.
CREATE OR REPLACE FUNCTION org_changes_note_all() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO org_changes (org_id) VALUES ('*');
    RETURN NULL;
END $$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['orgs', 'org_keys'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', t || '_changes_ins', t);
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', t || '_changes_upd', t);
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', t || '_changes_del', t);
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', t || '_changes_trunc', t);
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %I REFERENCING'
            ' NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION'
            ' org_changes_note()', t || '_changes_ins', t);
        EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON %I REFERENCING'
            ' OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT'
            ' EXECUTE FUNCTION org_changes_note()', t || '_changes_upd', t);
        EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %I REFERENCING'
            ' OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION'
            ' org_changes_note()', t || '_changes_del', t);
        EXECUTE format('CREATE TRIGGER %I AFTER TRUNCATE ON %I'
            ' FOR EACH STATEMENT EXECUTE FUNCTION org_changes_note_all()',
            t || '_changes_trunc', t);
    END LOOP;
END $$;
