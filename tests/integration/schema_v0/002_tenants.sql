-- 002_tenants.sql — tenants at the edge: org API keys, rate limits, pause
-- flag, audit log. Safe to apply twice; needs no superuser. Applied before
-- the demo data (100_*), after the base schema (001_*).

-- Written by PUT /orgs/{org_id} or by hand. None of these columns is part of
-- the org's processing configuration: orgs_bump_version (001) bumps
-- config_version only for enabled/config/org_id, so changing a rate limit
-- or pausing never retires the org's services. poold watches them through
-- its own fingerprint (keys and limits), polled every second.
ALTER TABLE orgs ADD COLUMN IF NOT EXISTS paused boolean NOT NULL DEFAULT false;
ALTER TABLE orgs ADD COLUMN IF NOT EXISTS rate_limit_rps double precision NULL;
ALTER TABLE orgs ADD COLUMN IF NOT EXISTS rate_limit_burst integer NULL;
DO $$
BEGIN
    ALTER TABLE orgs ADD CONSTRAINT orgs_rate_limit_check CHECK (
        (rate_limit_rps IS NULL AND rate_limit_burst IS NULL)
        OR (rate_limit_rps > 0 AND rate_limit_rps <= 1000000
            AND rate_limit_burst BETWEEN 1 AND 1000000));
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

-- Org API keys. Only a SHA-256 digest of the key is stored: the key itself
-- is shown once, at creation. No foreign key to orgs: deleting an org
-- revokes its keys (revoked_at) and keeps them for the audit trail.
CREATE TABLE IF NOT EXISTS org_keys (
    key_id      text PRIMARY KEY CHECK (key_id ~ '^key_[0-9a-f]{16}$'),
    org_id      text NOT NULL CHECK (org_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    label       text NULL CHECK (label IS NULL OR octet_length(label) <= 128),
    digest      bytea NOT NULL UNIQUE CHECK (length(digest) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz NULL
);
CREATE INDEX IF NOT EXISTS org_keys_org_idx ON org_keys (org_id);

-- Every admin write: who (token scope, client address), what, before and
-- after, in the same transaction as the change where there is one.
CREATE TABLE IF NOT EXISTS audit_log (
    entry_id    bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       jsonb NOT NULL,
    action      text NOT NULL,
    org_id      text NULL,
    before      jsonb NULL,
    after       jsonb NULL,
    request_id  text NULL
);
CREATE INDEX IF NOT EXISTS audit_log_org_idx ON audit_log (org_id, entry_id);
