-- Ids of the keyring keys that have encrypted secrets at rest, with a
-- one-way fingerprint of each key (never the key itself): a replica
-- started with another key under a known id, or without a key the stored
-- secrets need, refuses to start.
CREATE TABLE keyring_keys (
    id          TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL
);

-- Present until a control plane has encrypted the secrets written before
-- encryption at rest existed (and re-indexed secret unique keys by digest).
CREATE TABLE at_rest_pending (
    id SMALLINT PRIMARY KEY CHECK (id = 1)
);
INSERT INTO at_rest_pending (id) VALUES (1);
