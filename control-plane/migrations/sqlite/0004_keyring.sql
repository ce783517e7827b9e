-- Ids of the keyring keys that have encrypted secrets at rest, with a
-- one-way fingerprint of each key (never the key itself): a replica
-- started with another key under a known id, or without a key the stored
-- secrets need, refuses to start.
CREATE TABLE keyring_keys (
    id          TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL
);
