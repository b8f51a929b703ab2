-- 001_schema.sql — poold's tables. Safe to apply twice; needs no superuser.

CREATE TABLE IF NOT EXISTS orgs (
    org_id         text PRIMARY KEY
                   CHECK (org_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    enabled        boolean NOT NULL DEFAULT true,
    config         jsonb NOT NULL DEFAULT '{}',
    pool_max_size  integer NULL CHECK (pool_max_size IS NULL OR pool_max_size >= 1),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Every change to a row takes a new number from this sequence. poold polls
-- a digest of every row's (org_id, config_version, enabled, pool_max_size)
-- to learn that something changed, then retires the services built from an
-- older version of the row.
CREATE SEQUENCE IF NOT EXISTS orgs_config_version_seq;
ALTER TABLE orgs ADD COLUMN IF NOT EXISTS config_version bigint NOT NULL
    DEFAULT nextval('orgs_config_version_seq');
CREATE INDEX IF NOT EXISTS orgs_config_version_idx ON orgs (config_version);

CREATE OR REPLACE FUNCTION orgs_bump_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- A resize through poold changes only pool_max_size: that is not a
    -- configuration change and must not retire the org's services.
    IF TG_OP = 'UPDATE'
       AND NEW.enabled IS NOT DISTINCT FROM OLD.enabled
       AND NEW.config IS NOT DISTINCT FROM OLD.config
       AND NEW.org_id IS NOT DISTINCT FROM OLD.org_id THEN
        NEW.config_version := OLD.config_version;
        RETURN NEW;
    END IF;
    NEW.config_version := nextval('orgs_config_version_seq');
    NEW.updated_at := now();
    RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS orgs_bump_version ON orgs;
CREATE TRIGGER orgs_bump_version BEFORE INSERT OR UPDATE ON orgs
    FOR EACH ROW EXECUTE FUNCTION orgs_bump_version();

CREATE TABLE IF NOT EXISTS processed_messages (
    org_id          text NOT NULL,
    message_id      text NOT NULL,
    passed          boolean NOT NULL,
    checks          integer NOT NULL,
    failed_rules    text[] NOT NULL DEFAULT '{}',
    payload_sha256  bytea NOT NULL,
    processed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, message_id)
);
