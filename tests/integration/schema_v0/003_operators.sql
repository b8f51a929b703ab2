-- 003_operators.sql — operator controls (issue 13). Safe to apply twice.

-- POST /pools/{org_id}/pause sets it, .../resume clears it; while it is set
-- the org's POST /process* answer 503 org_paused. It is in the table, not in
-- a process, so every poold sharing the database follows within a second
-- (it is part of the fingerprint poold polls). orgs_bump_version() leaves
-- config_version alone when only this column changes: a pause is not a
-- configuration change and retires no service.
ALTER TABLE orgs ADD COLUMN IF NOT EXISTS paused boolean NOT NULL DEFAULT false;
