-- Presence across nodes: which `vigil serve` processes are alive and which connections each
-- of them holds. Several nodes on one PostgreSQL form a cluster with no other broker; these
-- two tables are the only shared state, and `NOTIFY vigil_presence` tells every node when
-- they change (see `src/realtime/presence/mod.rs`, "Design").
--
-- Liveness is judged with the database's clock (`clock_timestamp()`) on both sides, when a
-- node writes `last_seen` and when others compare it, so clock skew between nodes cannot
-- make a live node look dead or a dead one alive.

-- One row per live node, refreshed every heartbeat. A node whose `last_seen` is older than
-- the node timeout is dead: its sessions stop counting at once (the presence query joins on
-- a fresh `last_seen`) and the next sweep by any node deletes them.
CREATE TABLE presence_nodes
(
    node_id    uuid PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_seen  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- One row per open connection (a browser tab, a device). There is deliberately no foreign
-- key to `presence_nodes`: a node that was presumed dead (e.g. cut off from PostgreSQL for
-- longer than the timeout) keeps writing its sessions, which stay invisible and are swept
-- until its next heartbeat registers it again and rewrites all of them.
CREATE TABLE presence_sessions
(
    node_id      uuid        NOT NULL,
    session_id   bigint      NOT NULL,
    hospital     text        NOT NULL,
    user_id      text        NOT NULL,
    role         text        NOT NULL,
    connected_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (node_id, session_id)
);

-- The presence snapshot of one hospital is an index scan.
CREATE INDEX presence_sessions_hospital ON presence_sessions (hospital);
