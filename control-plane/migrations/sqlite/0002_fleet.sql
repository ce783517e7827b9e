-- Proxies connected to each control-plane replica, written by the replica
-- that serves them, so any replica's /fleet shows the whole fleet.
CREATE TABLE fleet_nodes (
    node_id    TEXT NOT NULL,
    cp_id      TEXT NOT NULL,
    cp_host    TEXT NOT NULL,          -- the replica's host and xDS address:
    cp_xds     TEXT NOT NULL,          -- a restarted replica replaces its rows
    status     TEXT NOT NULL,          -- JSON, as GET /fleet/{node} shows it
    updated_at BIGINT NOT NULL,        -- unix ms; rows not refreshed go stale
    PRIMARY KEY (node_id, cp_id)
);
