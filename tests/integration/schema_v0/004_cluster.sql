-- 004_cluster.sql — the replicas' lease table: one connection budget
-- (POOLD_CLUSTER_MAX_CONNS) shared by every poold on this database.
-- Safe to apply twice; needs no superuser.
--
-- Each replica upserts its row about once a second (heartbeat_at, from the
-- database's clock, so replicas' clocks do not matter). A row whose
-- heartbeat is older than the lease (7 s) is dead: its share goes to the
-- live ones. `granted` is the cap a replica may hold now; the sum of the
-- live rows' `granted` never exceeds the budget: a replica raises it only
-- under a lock on this table when the sum stays within the budget, and
-- lowers it only after its open connections fit under the lower value.
CREATE TABLE IF NOT EXISTS cluster_replicas (
    replica_id        text PRIMARY KEY CHECK (length(replica_id) BETWEEN 1 AND 128),
    registered_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    heartbeat_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    granted           integer NOT NULL DEFAULT 0 CHECK (granted >= 0),
    share             integer NOT NULL DEFAULT 0 CHECK (share >= 0),
    open_connections  integer NOT NULL DEFAULT 0 CHECK (open_connections >= 0),
    -- requests waiting for a connection at the last heartbeat (busy measure)
    waiting           integer NOT NULL DEFAULT 0 CHECK (waiting >= 0),
    budget            integer NOT NULL DEFAULT 0 CHECK (budget >= 0)
);
CREATE INDEX IF NOT EXISTS cluster_replicas_heartbeat_idx
    ON cluster_replicas (heartbeat_at);
